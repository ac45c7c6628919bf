"""The long-caption experiment's (arm, seed) runs as Ray tasks, so they spread over the cluster's CPUs.

The data goes to the object store once; every task trains one arm for one seed with a fixed number of
torch threads, so its result depends on the config, the data and the seed alone, not on where or beside
what it ran. Results come back in (seed, arm) order whatever order the tasks finish in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
import torch

from experiments.long_caption.arms import ArmSettings, CaptionedImages, run_one

LONGEST_FIRST = ("clip_long", "clip_77", "llm2clip", "base_llm")  # every arm, by cost per step


def _run_one_task(threads: int, *args) -> dict:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    row = run_one(*args)
    return {**row, "run_s": time.perf_counter() - started}


def run_arms_on_ray(
    arms: tuple[str, ...],
    seeds: tuple[int, ...],
    vision_tower,
    train: CaptionedImages,
    held_out: CaptionedImages,
    settings: ArmSettings,
    tokenizer,
    cpus_per_run: int,
    on_result: Callable[[dict], None] = lambda row: None,
    validation: CaptionedImages | None = None,
) -> list[dict]:
    """One row per (seed, arm) (see run_one, plus run_s: the task's seconds); on_result sees each row as
    its task finishes."""
    shared = [ray.put(part) for part in (vision_tower, train, held_out, settings, tokenizer, validation)]
    remote = ray.remote(num_cpus=cpus_per_run)(_run_one_task)
    # The costliest runs go first (the text towers', the full-context one above all), so the cheap ones
    # fill the gaps at the end instead of one long run finishing alone.
    costliest_first = sorted(arms, key=LONGEST_FIRST.index)
    pending = {
        remote.remote(cpus_per_run, arm, seed, *shared): (seed, arm)
        for arm in costliest_first
        for seed in seeds
    }
    rows: dict[tuple[int, str], dict] = {}
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        row = ray.get(done[0])
        rows[pending[done[0]]] = row
        on_result(row)
    return [rows[(seed, arm)] for seed in seeds for arm in arms]
