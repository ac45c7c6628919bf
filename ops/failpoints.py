"""Failpoints: named places where a test can make this process SIGKILL itself, on the Nth pass.

A test that kills a process "once a shard is done" by watching files from outside races the process:
when a stage's rows arrive in one block, it writes every shard's marker in a few milliseconds, and the
kill lands after all of them. A failpoint kills at an exact place instead.

    LLM2CLIP_FAILPOINTS="shard_marked=1"    SIGKILL this process right after its first shard marker

Only the process whose environment holds the variable is affected (a Ray worker does not inherit a
driver's environment). Unset, as in every real run, a failpoint is one environment lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV_VAR = "LLM2CLIP_FAILPOINTS"
_passes: Counter[str] = Counter()


def parse_failpoints(spec: str) -> dict[str, int]:
    """'a=1,b=3' -> {'a': 1, 'b': 3}: the pass (1-based) at which each named failpoint kills."""
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{ENV_VAR}: {item!r} is not name=N with N >= 1 (in {spec!r})")
        points[name.strip()] = int(count)
    return points


def failpoint(name: str) -> None:
    """SIGKILL this process if ENV_VAR names `name` and this is the pass it names."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    kill_at = parse_failpoints(spec).get(name)
    if kill_at is None:
        return
    _passes[name] += 1
    if _passes[name] == kill_at:
        print(f"[failpoint] {name}: pass {kill_at}, SIGKILL", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
