"""A recipe's wall time: a cold run into an empty artifact root vs. a fully cached rerun, side by side.

    python -m bench.demo_walltime [--config configs/demo.yaml] [--set KEY=VALUE ...]
    python -m bench.demo_walltime --config configs/long_caption_experiment.yaml \
        --name long_caption_walltime --target-s 3600 --artifacts /tmp/long-caption-run

Each run is `python workflows/full.py` in a fresh process, so Ray's start and the imports are counted as a
user would see them. Targets on 2 cores: the demo chain under 10 minutes, the long-caption experiment
recipe under 60 minutes (all five claims; 15 minutes was the target before its measurements showed that
no setting holds the claims within it). `--artifacts` keeps the runs' artifacts (an empty or new folder),
so the timed run's results are the ones a report quotes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.result import REPO, default_json, machine, write_result

TARGET_S = 600.0


def timed_run(config: str, root: str, overrides: list[str]) -> tuple[float, str]:
    argv = [sys.executable, str(REPO / "workflows" / "full.py"), "--config", config, "--artifacts", root]
    for assignment in overrides:
        argv += ["--set", assignment]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"workflow failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return elapsed, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="demo_walltime", help="the result's name (and its JSON's)")
    parser.add_argument("--target-s", type=float, default=TARGET_S, help="cold-run target, seconds")
    parser.add_argument("--json", default=None, help="default: bench/results/<name>.json")
    parser.add_argument(
        "--artifacts", default=None, help="an empty or new folder to keep the runs' artifacts"
    )
    args = parser.parse_args()
    args.json = args.json or default_json(args.name)

    kept = Path(args.artifacts) if args.artifacts else None
    if kept and kept.exists() and any(kept.iterdir()):
        raise SystemExit(f"--artifacts {args.artifacts}: not empty; a cold run needs an empty folder")
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as scratch:
        root = args.artifacts or scratch
        cold_s, cold_out = timed_run(args.config, root, args.overrides)
        warm_s, warm_out = timed_run(args.config, root, args.overrides)
        if args.artifacts:  # what the cold run printed: its stages' times and the report
            (kept / "cold_run.log").write_text(cold_out)
    assert "every stage was cached" in warm_out, warm_out
    stages = [line.split()[0] for line in cold_out.splitlines() if " ran " in f" {line} "]
    result = {
        "bench": args.name,
        "config": args.config,
        "overrides": args.overrides,
        "stages": stages,
        "cold_s": round(cold_s, 2),
        "cached_rerun_s": round(warm_s, 2),
        "cached_over_cold": round(warm_s / cold_s, 3),
        "target_cold_s": args.target_s,
        "cold_within_target": cold_s <= args.target_s,
        "machine": machine(),
    }
    write_result(args.json, result)
    print(f"{args.name}: {args.config} ({', '.join(stages)}) on {result['machine']}")
    print(f"{'run':<14}{'wall_s':>10}{'ratio':>10}")
    print(f"{'cold':<14}{cold_s:>10.1f}{1.0:>10.3f}")
    print(f"{'cached rerun':<14}{warm_s:>10.1f}{warm_s / cold_s:>10.3f}")
    verdict = "met" if result["cold_within_target"] else "MISSED"
    print(f"target: cold run under {args.target_s:.0f} s -> {verdict}")


if __name__ == "__main__":
    main()
