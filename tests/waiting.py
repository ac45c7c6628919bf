"""Waiting in tests: for a condition, with a bound, never for a fixed time (a fixed sleep is how races get
in: too short on a loaded machine, wasted on an idle one)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.05) -> T:
    """The first truthy value of condition(), polled every poll_s; AssertionError naming `what` once
    timeout_s has passed without one."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout_s:g} s for {what}")
        time.sleep(poll_s)


def processes_matching(*fragments: str) -> list[psutil.Process]:
    """Live processes whose command line contains any of the fragments."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if any(fragment in command for fragment in fragments):
            found.append(process)
    return found


def kill_and_wait_gone(processes: list[psutil.Process], timeout_s: float = 30) -> None:
    """SIGKILL each and wait until none runs (zombies of other parents count as gone)."""
    from tests.ray_cluster import is_alive

    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_until(lambda: not any(is_alive(p) for p in processes), timeout_s, "killed processes to exit")
