"""Which training pairs each worker sees at each step of finetune_text: a pure function of (seed, step,
rank, world), so a run is a function of its config and inputs, and a resumed run sees, from its
checkpoint's step on, exactly the batches an uninterrupted run would have seen.

The pairs come as row groups (pair_groups.py). Every epoch is cut into shuffle windows: a seeded order of
the groups, taken in runs of at least `window_rows` rows; a window's rows are permuted, step s of the
window takes the permutation's s-th slice of `world x batch_size` rows (one global batch), and rank r takes
its r-th `batch_size` rows; rows past the window's last full global batch wait for the next epoch. A worker
so holds one window, never the table, and reads only the groups its steps reach. When all the rows fit in
one window (the demo, the experiments), the epoch is one seeded permutation of all of them.

When the rows belong to several tasks (the caption pairs and each general text-pair set, column `task`),
every global batch holds one task's rows, as LLM2Vec batches E5: each task's rows of a window are cut
into global batches (the remainder waits) and the window's batches of all tasks are shuffled together.

The stage deals rows itself rather than through Ray Data's `get_dataset_shard`, whose split across workers
follows task timing and so changes from run to run. No Ray here: the same batches feed a single process
(world 1).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipelines.finetune_text.loop import Batch, order_sides
from pipelines.finetune_text.pair_groups import PairGroups, as_pair_groups

# Pairs a worker holds at once (finetune_text.shuffle_window_pairs): one window of ~1 KB pairs is ~64 MB.
DEFAULT_WINDOW_ROWS = 65536


def steps_per_epoch(num_rows: int, batch_size: int, world: int) -> int:
    """Full global batches in one pass over the rows (one window); fails, naming the sizes, when none."""
    steps = num_rows // (batch_size * world)
    if steps == 0:
        raise ValueError(
            f"{num_rows} training pairs are fewer than one global batch ({world} workers x {batch_size}); "
            "lower finetune_text.batch_size_per_worker or num_workers, or add data"
        )
    return steps


def task_global_batches(
    tasks: list[str], global_size: int, seed: int, epoch: int, window: tuple[int, ...] = ()
) -> list[np.ndarray]:
    """One window's global batches, each of one task's rows, in a seeded order."""
    rng = np.random.default_rng([seed, epoch, 1, *window])
    labels = np.asarray(tasks)
    batches = []
    for task in sorted(set(tasks)):
        rows = np.flatnonzero(labels == task)
        rows = rows[rng.permutation(len(rows))]
        batches += [rows[i * global_size : (i + 1) * global_size] for i in range(len(rows) // global_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclasses.dataclass(frozen=True)
class Window:
    groups: list[int]
    steps: int  # global batches it yields
    stream: tuple[int, ...]  # extra seed words: () when the epoch is one window (a plain permutation)


def epoch_windows(
    groups: PairGroups, global_size: int, window_rows: int, seed: int, epoch: int
) -> list[Window]:
    """The epoch's windows, from the group sizes and task counts alone (no rows read)."""
    count = len(groups.sizes)
    if groups.num_rows <= window_rows:
        runs = [list(range(count))]
    else:
        runs, run, rows = [], [], 0
        for group in np.random.default_rng([seed, epoch, 2]).permutation(count).tolist():
            run.append(group)
            rows += groups.sizes[group]
            if rows >= window_rows:
                runs.append(run)
                run, rows = [], 0
        if run:
            runs.append(run)
    windows = []
    for index, run in enumerate(runs):
        if groups.multi_task:
            totals = Counter()
            for group in run:
                totals.update(groups.task_counts[group])
            steps = sum(n // global_size for n in totals.values())
        else:
            steps = sum(groups.sizes[g] for g in run) // global_size
        windows.append(Window(run, steps, () if len(runs) == 1 else (3, index)))
    return windows


def pair_batches(
    pairs: pa.Table | PairGroups,
    batch_size: int,
    rank: int,
    world: int,
    seed: int,
    start_step: int = 0,
    query_side: str = "first",
    window_rows: int = DEFAULT_WINDOW_ROWS,
) -> Iterator[Batch]:
    """Endless: rank's batch for steps start_step, start_step + 1, ...; with query_side "random", which
    caption of a pair is the query is drawn per (step, rank), so it too is the same on a resume."""
    groups = as_pair_groups(pairs)
    global_size = batch_size * world
    if window_rows < global_size:
        raise ValueError(
            f"a shuffle window of {window_rows} pairs is smaller than one global batch ({global_size})"
        )
    if groups.multi_task:
        totals = Counter()
        for counts in groups.task_counts:
            totals.update(counts)
        if sum(n // global_size for n in totals.values()) == 0:
            raise ValueError(
                f"no task has one global batch ({world} workers x {batch_size}) of pairs; "
                "lower finetune_text.batch_size_per_worker or num_workers, or add data"
            )
    else:
        steps_per_epoch(groups.num_rows, batch_size, world)
    epoch, first_step = 0, 0  # the epoch holding start_step, and the step it begins at
    while True:
        windows = epoch_windows(groups, global_size, window_rows, seed, epoch)
        steps = sum(w.steps for w in windows)
        if steps == 0:
            raise ValueError(f"epoch {epoch} of the training pairs has no full global batch ({global_size})")
        if first_step + steps > start_step:
            break
        first_step += steps
        epoch += 1
    step = start_step
    while True:
        within = step - first_step
        for window in windows:
            if within < window.steps:
                yield from _window_batches(
                    groups, window, within, batch_size, rank, world, seed, epoch, step, query_side
                )
                step += window.steps - within
                within = 0
            else:
                within -= window.steps
        first_step = step
        epoch += 1
        windows = epoch_windows(groups, global_size, window_rows, seed, epoch)


def _window_batches(
    groups: PairGroups,
    window: Window,
    first: int,
    batch_size: int,
    rank: int,
    world: int,
    seed: int,
    epoch: int,
    step: int,
    query_side: str,
) -> Iterator[Batch]:
    """rank's batches of window's steps first, first + 1, ... (step is the run's step of `first`)."""
    if window.steps == 0:
        return
    rows = groups.rows_of(window.groups)
    tasks = rows["task"].to_pylist() if groups.multi_task else None
    rows = rows.drop_columns([c for c in ("task",) if c in rows.column_names])
    if tasks is not None:
        global_batches = task_global_batches(tasks, batch_size * world, seed, epoch, window.stream)
    else:
        order = np.random.default_rng([seed, epoch, *window.stream]).permutation(rows.num_rows)
    for index in range(first, window.steps):
        if tasks is not None:
            picked = global_batches[index][rank * batch_size : (rank + 1) * batch_size]
        else:
            start = (index * world + rank) * batch_size
            picked = order[start : start + batch_size]
        columns = rows.take(pa.array(picked, pa.int64())).to_pydict()
        yield order_sides(columns, query_side, random.Random(f"{seed}/{step}/{rank}"))
        step += 1
