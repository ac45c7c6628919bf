"""Run every benchmark in bench/ in turn (each prints its own side-by-side table and writes JSON)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = (
    "demo_walltime.py",
    "download_throughput.py",
    "recaption_throughput.py",
    "finetune_throughput.py",
    "embed_throughput.py",
    "vision_step_time.py",
)


def main() -> int:
    here = Path(__file__).resolve().parent
    failures = 0
    for name in BENCHES:
        print(f"== {name}", flush=True)
        failures += subprocess.run([sys.executable, str(here / name)], check=False).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
