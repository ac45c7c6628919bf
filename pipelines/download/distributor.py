"""img2dataset's multiprocessing distributor, made to survive a dead worker process.

img2dataset runs shards on a `multiprocessing.Pool`. When a pool worker dies (the OOM killer, a SIGKILL,
a segfault in a decoder), the Pool starts a new worker but never hears back about the shard the dead one
held, and `imap_unordered` waits forever: the stage hangs with no error. Here the shards run on a
`concurrent.futures.ProcessPoolExecutor` instead, where a dead worker breaks the pool and fails its
futures (BrokenProcessPool); the shards that did not finish are retried in a fresh pool, up to
img2dataset's `max_shard_retry` times. A shard is written whole by its retry (img2dataset writes a shard's
`_stats.json` last, and the stage treats that file as the shard's completion marker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from tqdm import tqdm

MAX_TASKS_PER_CHILD = 5  # img2dataset's own setting: bounds memory growth in long-lived workers
# Pool workers are forked from multiprocessing's forkserver, which imports img2dataset's downloader once per
# driver process. A spawned worker (img2dataset's choice) imports it again: 4-5 s of CPU per worker on a
# 2-core machine, paid again by every pool of a retry and every worker replaced after
# MAX_TASKS_PER_CHILD shards. The server is a fresh single-threaded process, so forking from it is safe
# where forking the driver (threads, Ray) is not, the reason img2dataset does not fork.
FORKSERVER_PRELOAD = ["img2dataset.downloader"]


def resilient_multiprocessing_distributor(
    processes_count: int,
    downloader: Callable[[Any], tuple[bool, Any]],
    reader: Iterable[Any],
    _subjob_size: int,
    max_shard_retry: int,
) -> None:
    """Same signature and contract as img2dataset.distributor.multiprocessing_distributor."""
    pending = list(reader)  # shard tasks: (shard id, path of the shard's url parquet); small
    for attempt in range(max_shard_retry + 1):
        if attempt:
            print(
                f"[download] retrying {len(pending)} shards (try {attempt} of {max_shard_retry})", flush=True
            )
        pending = _run_once(processes_count, downloader, pending)
        if not pending:
            return
    print(
        f"[download] {len(pending)} shards still failed after {max_shard_retry} retries; "
        "run the same command again to retry them",
        flush=True,
    )


def _run_once(processes_count: int, downloader, tasks: list[Any]) -> list[Any]:
    """Run the tasks; return the ones to retry (the downloader said so, or their worker died)."""
    failed = []
    context = get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)  # takes effect when the server first starts
    with ProcessPoolExecutor(
        processes_count, mp_context=context, max_tasks_per_child=MAX_TASKS_PER_CHILD
    ) as pool:
        futures = {pool.submit(downloader, task): task for task in tasks}
        for future in tqdm(as_completed(futures), total=len(futures)):
            try:
                ok, row = future.result()
            except BrokenProcessPool:
                failed.append(futures[future])
                continue
            if ok is False:
                failed.append(row)
    return failed
