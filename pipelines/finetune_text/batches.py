"""Which training pairs each worker sees at each step of finetune_text: a pure function of (seed, step,
rank, world), so a run is a function of its config and inputs, and a resumed run sees, from its
checkpoint's step on, exactly the batches an uninterrupted run would have seen.

Every epoch is a seeded permutation of all rows. Step s of an epoch takes the permutation's s-th slice of
`world x batch_size` rows (one global batch) and rank r takes its r-th `batch_size` rows; the rows past the
last full global batch wait for the next epoch's permutation. When the rows belong to several tasks (the
caption pairs and each general text-pair set, column `task`), every global batch holds one task's rows,
as LLM2Vec batches E5: each task's seeded permutation is cut into global batches (its remainder waits for
the next epoch) and the epoch's batches of all tasks are shuffled together.

The stage deals rows itself rather than through Ray Data's `get_dataset_shard`, whose split across workers
follows task timing and so changes from run to run. No Ray here: the same batches feed a single process
(world 1).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipelines.finetune_text.loop import Batch, order_sides


def steps_per_epoch(num_rows: int, batch_size: int, world: int) -> int:
    """Full global batches in one pass over the rows; fails, naming the sizes, when there is none."""
    steps = num_rows // (batch_size * world)
    if steps == 0:
        raise ValueError(
            f"{num_rows} training pairs are fewer than one global batch ({world} workers x {batch_size}); "
            "lower finetune_text.batch_size_per_worker or num_workers, or add data"
        )
    return steps


def _epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def task_global_batches(tasks: list[str], global_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch's global batches, each of one task's rows, in a seeded order."""
    rng = np.random.default_rng([seed, epoch, 1])
    labels = np.asarray(tasks)
    batches = []
    for task in sorted(set(tasks)):
        rows = np.flatnonzero(labels == task)
        rows = rows[rng.permutation(len(rows))]
        batches += [rows[i * global_size : (i + 1) * global_size] for i in range(len(rows) // global_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _task_steps_per_epoch(tasks: list[str], batch_size: int, world: int) -> int:
    global_size = batch_size * world
    steps = sum(tasks.count(task) // global_size for task in set(tasks))
    if steps == 0:
        raise ValueError(
            f"no task has one global batch ({world} workers x {batch_size}) of pairs; "
            "lower finetune_text.batch_size_per_worker or num_workers, or add data"
        )
    return steps


def pair_batches(
    table: pa.Table,
    batch_size: int,
    rank: int,
    world: int,
    seed: int,
    start_step: int = 0,
    query_side: str = "first",
) -> Iterator[Batch]:
    """Endless: rank's batch for steps start_step, start_step + 1, ...; with query_side "random", which
    caption of a pair is the query is drawn per (step, rank), so it too is the same on a resume."""
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    tasks = columns.pop("task", None)
    by_task = tasks is not None and len(set(tasks)) > 1
    if by_task:
        per_epoch = _task_steps_per_epoch(tasks, batch_size, world)
    else:
        per_epoch = steps_per_epoch(table.num_rows, batch_size, world)
    step, epoch, order = start_step, -1, np.empty(0, dtype=np.int64)
    global_batches: list[np.ndarray] = []
    while True:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            if by_task:
                global_batches = task_global_batches(tasks, batch_size * world, seed, epoch)
            else:
                order = _epoch_order(table.num_rows, seed, epoch)
        if by_task:
            rows = global_batches[step % per_epoch][rank * batch_size : (rank + 1) * batch_size].tolist()
        else:
            start = ((step % per_epoch) * world + rank) * batch_size
            rows = order[start : start + batch_size].tolist()
        picked = {name: [values[i] for i in rows] for name, values in columns.items()}
        yield order_sides(picked, query_side, random.Random(f"{seed}/{step}/{rank}"))
        step += 1
