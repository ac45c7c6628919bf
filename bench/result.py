"""What every benchmark shares: where results go, the machine they were measured on, and the writer."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


def default_json(name: str) -> str:
    """bench/results/<name>.json: where a benchmark writes unless --json says otherwise."""
    return str(RESULTS_DIR / f"{name}.json")


def machine() -> str:
    """Host, architecture and logical CPUs: the figures mean little without them."""
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus"


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def fit_start_and_per_item(sizes: list[int], walls: list[float]) -> tuple[float, float]:
    """Least-squares (start_s, per_item_s) of wall = start + n x per_item over runs of `sizes` items:
    a stage's fixed cost (engine start, scheduling) apart from its steady-state cost per item."""
    count = len(sizes)
    mean_n, mean_w = sum(sizes) / count, sum(walls) / count
    spread = sum((n - mean_n) ** 2 for n in sizes)
    per_item = sum((n - mean_n) * (w - mean_w) for n, w in zip(sizes, walls)) / spread
    return mean_w - per_item * mean_n, per_item
