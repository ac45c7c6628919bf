"""Which training pairs each worker sees at each step of finetune_text: a pure function of (seed, step,
rank, world), so a run is a function of its config and inputs, and a resumed run sees, from its
checkpoint's step on, exactly the batches an uninterrupted run would have seen.

Every epoch is a seeded permutation of all rows. Step s of an epoch takes the permutation's s-th slice of
`world x batch_size` rows (one global batch) and rank r takes its r-th `batch_size` rows; the rows past the
last full global batch wait for the next epoch's permutation. The stage deals rows itself rather than
through Ray Data's `get_dataset_shard`, whose split across workers follows task timing and so changes from
run to run. No Ray here: the same batches feed a single process (world 1).
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
    per_epoch = steps_per_epoch(table.num_rows, batch_size, world)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    step, epoch, order = start_step, -1, np.empty(0, dtype=np.int64)
    while True:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = _epoch_order(table.num_rows, seed, epoch)
        start = ((step % per_epoch) * world + rank) * batch_size
        rows = order[start : start + batch_size].tolist()
        picked = {name: [values[i] for i in rows] for name, values in columns.items()}
        yield order_sides(picked, query_side, random.Random(f"{seed}/{step}/{rank}"))
        step += 1
