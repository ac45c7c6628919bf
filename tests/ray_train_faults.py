"""Fault injection for Ray Train tests: SIGKILL a real worker process once the controller has registered a
checkpoint that satisfies a condition (a folder on disk is not enough: an unregistered checkpoint is not
resumed from)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def registered_checkpoint_steps(train_dir: Path) -> list[int]:
    try:
        snapshot = json.loads((train_dir / "checkpoint_manager_snapshot.json").read_text())
        return [int(r["metrics"]["step"]) for r in snapshot["checkpoint_results"]]
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return []


def kill_a_worker_when(
    train_dir: Path, ready: Callable[[list[int]], bool], killed: list[int]
) -> threading.Thread:
    """Start a thread that waits (up to 240 s) until ready(registered steps), then SIGKILLs one
    RayTrainWorker process and records its pid in `killed`. Join it after the run."""

    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not ready(registered_checkpoint_steps(train_dir)):
            time.sleep(0.05)
        for process in psutil.process_iter(["pid", "cmdline"]):
            if "RayTrainWorker" in " ".join(process.info["cmdline"] or []):
                os.kill(process.info["pid"], signal.SIGKILL)
                killed.append(process.info["pid"])
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
