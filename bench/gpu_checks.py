"""The GPU shakedown's checks (bench/gpu_shakedown.py runs each in a process of its own, under a time
cap). Each returns a dict: status ("ok", "failed", "skipped"), rows of figures, and notes. No Ray, MLflow
or vLLM: a bare GPU machine has torch, transformers, timm, torchvision and peft. `tiny` runs the same code
at toy shapes (on CPU, in the suite)."""

from __future__ import annotations

import re
import subprocess
import sys

from bench.paper_shapes import LLAMA_3_8B, TINY_LLAMA, peak_bf16_tflops


def device_and_peak(tiny: bool):
    """(device, its name, dense bf16 peak TFLOP/s or None when the name is not in the table)."""
    import torch

    if torch.cuda.is_available() and not tiny:
        name = torch.cuda.get_device_name(0)
        return torch.device("cuda"), name, peak_bf16_tflops(name)
    return torch.device("cpu"), "cpu", None


def peak_memory_gib(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def check_tests(tiny: bool) -> dict:
    """The Ray-free tests (models, ops: they never import Ray or MLflow), the EVA02 timm tower's among
    them; pytest in a subprocess, its summary parsed."""
    paths = (
        ["tests/models/test_timm_tower.py", "tests/ops/test_clip_loss.py"]
        if tiny
        else ["tests/models", "tests/ops"]
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
    ]
    result = subprocess.run([*command, *paths], capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", tail)}
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    failures = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {
        "status": "ok" if result.returncode == 0 else "failed",
        "rows": [{"name": "pytest " + " ".join(paths), **counts}],
        "notes": [tail, *failures[:20]] if failed else [tail],
    }


def check_vision_mfu(tiny: bool) -> dict:
    """bench.gpu_throughput's production-step rows at ViT-L/14-336 + the adapter, bf16: plain and each
    option, MFU against the peak of the GPU it ran on."""
    from bench.gpu_throughput import OPTIONS, vision_mfu

    device, name, peak = device_and_peak(tiny)
    batch, steps = (8, 2) if tiny else (64, 10)
    plain = vision_mfu(device, tiny, batch, steps, peak or 1.0)
    rows = [plain]
    for option in () if tiny else OPTIONS:
        rows.append(
            vision_mfu(device, tiny, batch, steps, peak or 1.0, option, flops=plain["flops_per_step"])
        )
    for row in rows:
        ratio, _ = row.pop("ratio"), row.pop("baseline")
        row["mfu"] = ratio if peak else None
    notes = [
        f"{name}: dense bf16 peak {peak} TFLOP/s" if peak else f"{name}: no peak in the table, MFU left out"
    ]
    return {"status": "ok", "rows": rows, "notes": notes}


def _random_llama(shape: dict, device, causal: bool = False):
    """A Llama of `shape` with random weights, built on the device in bf16 on CUDA (fp32 on CPU): an 8B
    model in fp32 on the host would take 32 GB and minutes to initialise."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = (LlamaForCausalLM if causal else LlamaModel)(LlamaConfig(**shape))
    finally:
        torch.set_default_dtype(previous)
    return model


def check_embed(tiny: bool) -> dict:
    """The embed stage's forward (LLMTextEncoder: bidirectional attention, mean pooling) of a
    Llama-3-8B-shaped encoder over captions of recipe length (128 tokens, the sidecars' dense ones ~200)."""
    from bench.gpu_throughput import time_encoder_forward
    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import TextEncoderConfig

    device, name, peak = device_and_peak(tiny)
    shape, (batch, tokens, batches) = (TINY_LLAMA, (8, 32, 2)) if tiny else (LLAMA_3_8B, (256, 128, 8))
    reset_peak(device)
    backbone = _random_llama(shape, device)
    params = sum(p.numel() for p in backbone.parameters())
    encoder = LLMTextEncoder(backbone.eval(), TextEncoderConfig(max_length=512)).eval()
    seconds = time_encoder_forward(encoder, shape["vocab_size"], batch, tokens, batches, device)
    captions = batch * batches
    flops = 2 * params * captions * tokens
    row = {
        "name": f"embed forward, {'tiny Llama' if tiny else 'Llama-3-8B shape'}, "
        f"{captions} captions x {tokens} tokens",
        "captions_per_s": round(captions / seconds, 1),
        "tokens_per_s": round(captions * tokens / seconds),
        "mfu": round(flops / seconds / (peak * 1e12), 4) if peak else None,
        "peak_memory_gib": peak_memory_gib(device),
        "params_b": round(params / 1e9, 2),
    }
    return {"status": "ok", "rows": [row], "notes": [f"{name}; MFU counts 2 x parameters x tokens"]}
