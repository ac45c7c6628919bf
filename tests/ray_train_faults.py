"""Fault injection for Ray Train tests: SIGKILL a real worker process once the controller has registered a
checkpoint that satisfies a condition (a folder on disk is not enough: an unregistered checkpoint is not
resumed from)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from testbed.waiting import processes_matching, wait_until


def registered_checkpoint_steps(train_dir: Path) -> list[int]:
    try:
        snapshot = json.loads((train_dir / "checkpoint_manager_snapshot.json").read_text())
        return [int(r["metrics"]["step"]) for r in snapshot["checkpoint_results"]]
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return []


def kill_a_worker_when(
    train_dir: Path, ready: Callable[[list[int]], bool], killed: list[int]
) -> threading.Thread:
    """Start a thread that waits (up to 240 s) until ready(registered steps), then for a RayTrainWorker
    process, SIGKILLs it and records its pid in `killed`; if either never comes, nothing is killed and the
    caller's check of `killed` fails. Join it after the run."""

    def watch() -> None:
        try:
            wait_until(lambda: ready(registered_checkpoint_steps(train_dir)), 240, "a checkpoint")
            (worker, *_) = wait_until(lambda: processes_matching("RayTrainWorker"), 60, "a RayTrainWorker")
        except AssertionError:
            return
        os.kill(worker.pid, signal.SIGKILL)
        killed.append(worker.pid)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
