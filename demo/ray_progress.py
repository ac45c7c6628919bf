"""Waiting on Ray object refs with a progress bar, so long stages show where they are."""

from __future__ import annotations

import ray
from tqdm.auto import tqdm


def wait_with_progress(refs: list[ray.ObjectRef], desc: str, timeout_s: float | None = None) -> list:
    """ray.get of all refs in completion order, one tick per finished ref; raises the first task error."""
    results = []
    remaining = list(refs)
    with tqdm(total=len(refs), desc=desc, unit="task", disable=not refs) as bar:
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1, timeout=timeout_s)
            if not done:
                raise TimeoutError(f"{desc}: no task finished within {timeout_s} s")
            results.append(ray.get(done[0]))
            bar.update(1)
    return results
