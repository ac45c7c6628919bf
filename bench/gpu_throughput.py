"""GPU part of the suite, without Ray: vision-training MFU and embed throughput at paper shapes.

- vision: a CLIP ViT-L/14-336-shaped tower (from its config, random weights: nothing is downloaded) with
  the LLM2CLIP adapter, bf16 autocast, timed through train_vision's own train_steps (the global loss,
  clipping, AdamW with layer decay, the schedule) on one batch held on the device; FLOPs per step counted
  by torch's FlopCounterMode; MFU = achieved FLOP/s over the GPU's peak bf16 FLOP/s.
- embed: a Llama-3.2-1B-shaped encoder (random weights) mean-pooling ~120-token captions in bf16;
  captions/s and MFU (2 x parameters x tokens per forward).

Without a CUDA device it writes {"skipped": ...} and exits 0; `--device cpu --tiny` runs the same code
at toy sizes on CPU (the code path, not a measurement).
"""

from __future__ import annotations

import argparse
import itertools
import time

from bench.paper_shapes import LLAMA_3_2_1B, llm2clip_config, loader_feed, peak_bf16_tflops
from bench.result import default_json, machine, write_result

# train_vision's GPU options, each timed in a row of its own
OPTIONS = ("fused_adamw", "gradient_checkpointing", "compile", "bf16_weights")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def vision_mfu(
    device,
    tiny: bool,
    batch: int,
    steps: int,
    peak_tflops: float,
    option: str = "",
    flops: float | None = None,
    loader_batches=None,
) -> dict:
    """One row: the production step, as is or with one of train_vision's GPU options (OPTIONS). MFU
    counts the model's FLOPs (`flops`, per step: the plain step's count), not recomputed ones, as MFU is
    defined. `loader_batches` (an iterator of CPU batches from train_vision's loader) replaces the one
    batch held on the device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.llm2clip import LLM2CLIPModel
    from pipelines.train_vision.loop import (
        VisionLoopSettings,
        build_optimizer,
        to_training_precision,
        train_steps,
    )

    config, llm_dim, image_size = llm2clip_config(tiny)
    model = LLM2CLIPModel(config).to(device)
    if option == "gradient_checkpointing":
        model.vision_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if option == "compile":
        model.compile()  # as the worker does: in place
    pixels = torch.randn(batch, 3, image_size, image_size, device=device)
    features = torch.randn(batch, llm_dim, device=device)
    # The production step (pipelines/train_vision/loop.py): the global CLIP loss with gathered features,
    # gradient averaging and clipping, AdamW with layer decay and the warm-up + cosine schedule.
    settings = VisionLoopSettings(
        learning_rate=1e-5,
        weight_decay=0.05,
        warmup_steps=0,
        max_steps=steps + 4,
        max_grad_norm=5.0,
        layer_decay=0.85,
        fused_adamw=option == "fused_adamw",
        bf16_weights=option == "bf16_weights",
    )
    master = to_training_precision(model, settings)
    optimizer, scheduler = build_optimizer(model, settings, master)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    done = {"steps": 0}

    def run_steps(count: int) -> None:
        source = itertools.islice(loader_batches, count) if loader_batches else None
        done["steps"] = train_steps(
            model,
            source or itertools.repeat((pixels, features), count),
            settings,
            optimizer,
            scheduler,
            done["steps"],
            lambda step, metrics: None,
            device,
            autocast,
            master,
        )

    if flops is None:
        with FlopCounterMode(display=False) as counter:
            run_steps(1)
        flops = counter.get_total_flops()
    run_steps(2)  # warm-up (and, with compile, the compilation)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    run_steps(steps)
    _sync(device)
    seconds = (time.perf_counter() - began) / steps
    mfu = flops / seconds / (peak_tflops * 1e12)
    memory = (
        f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
    )
    return {
        "name": f"vision step, {'tiny ViT' if tiny else 'ViT-L/14-336'} + adapter, batch {batch}"
        + (f", {option}" if option else "")
        + (", fed by the loader" if loader_batches else ""),
        "figure": round(batch / seconds, 1),
        "unit": "img/s",
        "baseline": f"peak bf16 {peak_tflops:g} TFLOP/s",
        "ratio": float(f"{mfu:.3g}"),
        "note": f"MFU; {flops / 1e9:.1f} GFLOP/step, {seconds * 1e3:.1f} ms/step{memory}",
        "flops_per_step": flops,
    }


def time_encoder_forward(encoder, vocab_size: int, batch: int, tokens: int, batches: int, device) -> float:
    """Seconds for `batches` forwards of `batch` random captions of `tokens` tokens, after one warm-up."""
    import torch

    ids = torch.randint(0, vocab_size, (batch, tokens), device=device)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        encoder(input_ids=ids, attention_mask=mask, pool_mask=mask)
        _sync(device)
        began = time.perf_counter()
        for _ in range(batches):
            encoder(input_ids=ids, attention_mask=mask, pool_mask=mask)
        _sync(device)
    return time.perf_counter() - began


def embed_throughput(device, tiny: bool, batch: int, tokens: int, batches: int, peak_tflops: float) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaModel

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import TextEncoderConfig

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
        else LLAMA_3_2_1B
    )
    backbone = LlamaModel(LlamaConfig(**shape)).to(
        device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    encoder = LLMTextEncoder(backbone.eval(), TextEncoderConfig()).eval()
    params = sum(p.numel() for p in backbone.parameters())
    seconds = time_encoder_forward(encoder, shape["vocab_size"], batch, tokens, batches, device)
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
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="default: the GPU's dense bf16 peak, by its name"
    )
    parser.add_argument("--vision-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--options",
        nargs="*",
        default=list(OPTIONS),
        choices=OPTIONS,
        help="train_vision GPU options, each timed in a row of its own beside the plain step",
    )
    parser.add_argument(
        "--loader-processes",
        type=int,
        default=0,
        help="also time the plain step fed by train_vision's loader with this many decode processes",
    )
    parser.add_argument("--embed-batch", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--json", default=default_json("gpu_throughput"))
    args = parser.parse_args()

    import torch

    described = machine()
    if args.device == "cuda" and not torch.cuda.is_available():
        result = {
            "bench": "gpu_throughput",
            "machine": described,
            "skipped": "no CUDA device on this machine",
        }
    else:
        device = torch.device(args.device)
        if device.type == "cuda":
            described += f", {torch.cuda.get_device_name(device)}"
            args.peak_tflops = args.peak_tflops or peak_bf16_tflops(torch.cuda.get_device_name(device))
            if args.peak_tflops is None:
                raise SystemExit(f"{torch.cuda.get_device_name(device)}: peak unknown; give --peak-tflops")
        args.peak_tflops = args.peak_tflops or 1.0  # CPU at --tiny: a code path, not a measurement
        plain = vision_mfu(device, args.tiny, args.vision_batch, args.steps, args.peak_tflops)

        def variant(**how) -> dict:  # the same step with one change, against the plain step's FLOPs
            return vision_mfu(
                device,
                args.tiny,
                args.vision_batch,
                args.steps,
                args.peak_tflops,
                flops=plain["flops_per_step"],
                **how,
            )

        rows = [plain] + [variant(option=option) for option in args.options]
        if args.loader_processes:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="gpu-loader-") as work:
                llm_dim = 128 if args.tiny else 4096
                feed = loader_feed(work, args.tiny, args.vision_batch, llm_dim, args.loader_processes)
                rows.append(variant(loader_batches=feed))
                feed.close()
        rows += [
            embed_throughput(device, args.tiny, args.embed_batch, args.tokens, args.steps, args.peak_tflops),
        ]
        result = {"bench": "gpu_throughput", "machine": described, "device": args.device, "rows": rows}
    write_result(args.json, result)
    if "skipped" in result:
        print(f"gpu_throughput: skipped ({result['skipped']})")
        return
    for row in result["rows"]:
        print(f"{row['name']:<60}{row['figure']:>10} {row['unit']:<11} MFU {row['ratio']:.4f}  {row['note']}")


if __name__ == "__main__":
    main()
