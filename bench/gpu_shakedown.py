"""The GPU shakedown: every check a GPU machine should run on this project, as one command, each check in a
process of its own under its own time cap; one that fails or runs out of time is recorded and the next
one runs. Writes shakedown.json and shakedown.md under --out.

    python -m bench.gpu_shakedown --out gpu-shakedown                  # on the GPU machine (~9 min)
    python -m bench.gpu_shakedown --out /tmp/sd --tiny                 # every check at toy shapes on CPU
    python -m bench.gpu_shakedown --out gpu-shakedown --only embed finetune

Checks (bench/gpu_checks.py, gpu_train_checks.py, gpu_vision_checks.py):
  tests        the Ray-free tests (tests/models, tests/ops), the EVA02 timm tower's among them
  vision_mfu   train_vision's production step at ViT-L/14-336 + adapter, bf16: plain and each GPU option,
               MFU against the peak of the GPU it finds (bench/paper_shapes.py: BF16_DENSE_TFLOPS)
  embed        the embed forward of a Llama-3-8B-shaped encoder: captions/s, tokens/s, MFU, peak memory
  finetune     finetune_text's loop (MNTP steps, then contrastive) at the recipe's settings on
               Llama-3.2-1B- and Llama-3-8B-shaped models: step time, peak memory, whether it fits
  vision_loop  300 steps at small shapes: the loss falls, and a checkpoint resumes to the same losses
  two_ranks    the gathered loss over two NCCL ranks equals one process's (skipped on one GPU)

The machine needs torch, transformers, peft (and timm for the EVA02 test); no Ray, MLflow or vLLM.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# name -> (module, function, cap in seconds on a GPU); the caps add up to 9.5 minutes
CHECKS = {
    "tests": ("bench.gpu_checks", "check_tests", 120),
    "vision_mfu": ("bench.gpu_checks", "check_vision_mfu", 120),
    "embed": ("bench.gpu_checks", "check_embed", 90),
    "finetune": ("bench.gpu_train_checks", "check_finetune", 150),
    "vision_loop": ("bench.gpu_vision_checks", "check_vision_loop", 45),
    "two_ranks": ("bench.gpu_vision_checks", "check_two_ranks", 45),
}
TINY_CAP_S = 300  # per check at --tiny, on CPU: a guard against hangs, under the suite's own load


def run_child(name: str, tiny: bool, out: Path) -> None:
    """In the check's own process: run it, write its result."""
    import importlib

    module, function, _ = CHECKS[name]
    began = time.perf_counter()
    result = getattr(importlib.import_module(module), function)(tiny)
    result["seconds"] = round(time.perf_counter() - began, 1)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))


def run_check(name: str, tiny: bool, out: Path) -> dict:
    cap = TINY_CAP_S if tiny else CHECKS[name][2]
    command = [sys.executable, "-m", "bench.gpu_shakedown", "--child", name, "--out", str(out)]
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [*command, *(["--tiny"] if tiny else [])], capture_output=True, text=True, timeout=cap
        )
        log = done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        log = f"timed out after {cap} s\n" + (expired.stdout or b"").decode(errors="replace")[-2000:]
        done = None
    (out / f"{name}.log").write_text(log)
    written = out / f"{name}.json"
    if done is not None and done.returncode == 0 and written.is_file():
        return {"check": name, **json.loads(written.read_text())}
    reason = "timed out" if done is None else f"exit {done.returncode}"
    return {
        "check": name,
        "status": "failed",
        "rows": [],
        "notes": [f"{reason} after {time.perf_counter() - began:.0f} s (cap {cap} s)", log.strip()[-1500:]],
        "seconds": round(time.perf_counter() - began, 1),
    }


def markdown(results: list[dict], machine: str) -> str:
    lines = [
        f"# GPU shakedown ({machine})",
        "",
        "| check | status | s | what | figures |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        rows = result["rows"] or [{"name": "-"}]
        for i, row in enumerate(rows):
            figures = ", ".join(f"{k} {v}" for k, v in row.items() if k != "name")
            head = [result["check"], result["status"], str(result["seconds"])] if i == 0 else ["", "", ""]
            lines.append("| " + " | ".join([*head, str(row["name"]), figures.replace("|", "/")]) + " |")
    lines.append("")
    for result in results:
        lines += [f"- {result['check']}: " + note.splitlines()[0] for note in result["notes"] if note]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for shakedown.json, shakedown.md and each log")
    parser.add_argument("--tiny", action="store_true", help="toy shapes on CPU: the code paths, not figures")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    parser.add_argument("--child", choices=list(CHECKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_child(args.child, args.tiny, out)
        return 0
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    machine = f"{platform.node()}, {gpu}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    results = []
    for name in args.only or list(CHECKS):
        print(f"[gpu_shakedown] {name} ...", flush=True)
        results.append(run_check(name, args.tiny, out))
        print(f"[gpu_shakedown] {name}: {results[-1]['status']} ({results[-1]['seconds']} s)", flush=True)
    (out / "shakedown.json").write_text(
        json.dumps({"machine": machine, "checks": results}, indent=1, default=str)
    )
    table = markdown(results, machine)
    (out / "shakedown.md").write_text(table)
    print(table, flush=True)
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
