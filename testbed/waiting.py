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
    """Running processes started by this test session (its descendants: the suite's Ray nodes and their
    workers, the drivers it runs) whose command line contains any of the fragments. Only descendants: a
    Ray, a demo or another suite running beside this one has processes of the same names."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:  # gone, or a zombie, since the listing
            continue
        if any(fragment in command for fragment in fragments) and is_alive(process):
            found.append(process)
    return found


def kill_and_wait_gone(processes: list[psutil.Process], timeout_s: float = 30) -> None:
    """SIGKILL each and wait until none runs (zombies of other parents count as gone)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_until(lambda: not any(is_alive(p) for p in processes), timeout_s, "killed processes to exit")


def is_alive(process) -> bool:
    """Running and not a zombie (an exited child that its parent has not reaped yet)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe_processes(processes: set[tuple[int, float]]) -> str:
    """One line per (pid, start time): its parent, age, state and command line; what a timed-out wait for
    processes to end must show."""
    lines = []
    for pid, started in sorted(processes):
        try:
            process = psutil.Process(pid)
            described = f"ppid {process.ppid()} status {process.status()} {' '.join(process.cmdline())[:200]}"
        except psutil.Error as gone:
            described = f"gone since the listing ({type(gone).__name__})"
        lines.append(f"  pid {pid}, {time.time() - started:.0f} s old: {described}")
    return "\n".join(lines)
