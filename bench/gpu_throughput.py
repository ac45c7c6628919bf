"""GPU part of the suite, without Ray: vision-training MFU and embed throughput at paper shapes.

- vision: a CLIP ViT-L/14-336-shaped tower (from its config, random weights: nothing is downloaded) with
  the LLM2CLIP adapter, bf16 autocast, one training step (forward, backward, AdamW) per batch; FLOPs per
  step counted by torch's FlopCounterMode; MFU = achieved FLOP/s over the GPU's peak bf16 FLOP/s.
- embed: a Llama-3.2-1B-shaped encoder (random weights) mean-pooling ~120-token captions in bf16;
  captions/s and MFU (2 x parameters x tokens per forward).

Without a CUDA device it writes {"skipped": ...} and exits 0; `--device cpu --tiny` runs the same code
at toy sizes on CPU (the code path, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100 SXM


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def vision_mfu(device, tiny: bool, batch: int, steps: int, peak_tflops: float) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPVisionConfig

    from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
    from ops.clip_loss import clip_loss

    shape = (
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        }
        if tiny
        else {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
        }
    )
    llm_dim = 128 if tiny else 4096
    config = LLM2CLIPConfig(
        vision_config={**CLIPVisionConfig(**shape).to_dict(), "model_type": "clip_vision_model"},
        llm_dim=llm_dim,
        adapter_width=128 if tiny else 1024,
        adapter_depth=2 if tiny else 4,
        projection_dim=64 if tiny else 1280,
    )
    model = LLM2CLIPModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    pixels = torch.randn(batch, 3, shape["image_size"], shape["image_size"], device=device)
    features = torch.randn(batch, llm_dim, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            out = model(pixel_values=pixels, llm_embeddings=features)
            loss = clip_loss(out["image_embeds"], out["text_embeds"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - began) / steps
    mfu = flops / seconds / (peak_tflops * 1e12)
    return {
        "name": f"vision step, {'tiny ViT' if tiny else 'ViT-L/14-336'} + adapter, batch {batch}",
        "figure": round(batch / seconds, 1),
        "unit": "img/s",
        "baseline": f"peak bf16 {peak_tflops:g} TFLOP/s",
        "ratio": float(f"{mfu:.3g}"),
        "note": f"MFU; {flops / 1e9:.1f} GFLOP/step, {seconds * 1e3:.1f} ms/step",
    }


def embed_throughput(device, tiny: bool, batch: int, tokens: int, batches: int, peak_tflops: float) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaModel

    from models.text_encoder import LLMTextEncoder, TextEncoderConfig

    shape = (
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": 1024,
        }
        if tiny
        else {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
        }
    )
    backbone = LlamaModel(LlamaConfig(**shape)).to(
        device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    encoder = LLMTextEncoder(backbone.eval(), TextEncoderConfig()).eval()
    params = sum(p.numel() for p in backbone.parameters())
    ids = torch.randint(0, shape["vocab_size"], (batch, tokens), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        encoder(input_ids=ids, attention_mask=mask, pool_mask=mask)
        _sync(device)
        began = time.perf_counter()
        for _ in range(batches):
            encoder(input_ids=ids, attention_mask=mask, pool_mask=mask)
        _sync(device)
    seconds = time.perf_counter() - began
    mfu = 2 * params * batch * tokens * batches / seconds / (peak_tflops * 1e12)
    return {
        "name": f"embed forward, {'tiny Llama' if tiny else 'Llama-3.2-1B shape'}, {tokens} tokens x {batch}",
        "figure": round(batch * batches / seconds, 1),
        "unit": "captions/s",
        "baseline": f"peak bf16 {peak_tflops:g} TFLOP/s",
        "ratio": float(f"{mfu:.3g}"),
        "note": f"MFU (2 x {params / 1e9:.2f}B params x tokens)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a code-path check, e.g. on CPU)")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS)
    parser.add_argument("--vision-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--embed-batch", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "gpu_throughput.json"))
    args = parser.parse_args()

    import torch

    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus"
    if args.device == "cuda" and not torch.cuda.is_available():
        result = {"bench": "gpu_throughput", "machine": machine, "skipped": "no CUDA device on this machine"}
    else:
        device = torch.device(args.device)
        if device.type == "cuda":
            machine += f", {torch.cuda.get_device_name(device)}"
        rows = [
            vision_mfu(device, args.tiny, args.vision_batch, args.steps, args.peak_tflops),
            embed_throughput(device, args.tiny, args.embed_batch, args.tokens, args.steps, args.peak_tflops),
        ]
        result = {"bench": "gpu_throughput", "machine": machine, "device": args.device, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    if "skipped" in result:
        print(f"gpu_throughput: skipped ({result['skipped']})")
        return
    for row in result["rows"]:
        print(f"{row['name']:<60}{row['figure']:>10} {row['unit']:<11} MFU {row['ratio']:.4f}  {row['note']}")


if __name__ == "__main__":
    main()
