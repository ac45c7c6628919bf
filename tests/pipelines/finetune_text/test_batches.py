"""finetune_text's batches: a function of (seed, step, rank, world); a resume sees what an uninterrupted
run sees; the workers' batches of a step are disjoint and an epoch draws no row twice."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from pipelines.finetune_text.batches import pair_batches, steps_per_epoch


def _pairs(count: int) -> pa.Table:
    return pa.table(
        {"caption_1": [f"short {i}" for i in range(count)], "caption_2": [f"long {i}" for i in range(count)]}
    )


def _rows(batch) -> list[int]:
    """The pair ids a batch holds, whichever side each caption went to."""
    return [int(caption.split()[1]) for caption in batch["query_side"]]


def _take(table, steps: int, **kwargs) -> list[dict]:
    return list(itertools.islice(pair_batches(table, **kwargs), steps))


def test_a_resumed_stream_is_the_tail_of_the_uninterrupted_one():
    table = _pairs(50)
    settings = {"batch_size": 4, "world": 2, "seed": 7}
    for rank in (0, 1):
        uninterrupted = _take(table, 20, rank=rank, **settings)
        resumed = _take(table, 13, rank=rank, start_step=7, **settings)
        assert resumed == uninterrupted[7:]  # query/key sides included
        assert _take(table, 20, rank=rank, **settings) == uninterrupted  # same seed, same batches
    assert _take(table, 20, rank=0, batch_size=4, world=2, seed=8) != _take(table, 20, rank=0, **settings)


def test_workers_of_a_step_share_no_row_and_an_epoch_repeats_none():
    table = _pairs(50)
    per_epoch = steps_per_epoch(50, batch_size=4, world=2)
    assert per_epoch == 6  # 50 // 8: two rows wait for the next epoch's order
    streams = [_take(table, 2 * per_epoch, rank=r, batch_size=4, world=2, seed=0) for r in (0, 1)]
    for epoch in range(2):
        seen = [
            row
            for r in (0, 1)
            for b in streams[r][epoch * per_epoch : (epoch + 1) * per_epoch]
            for row in _rows(b)
        ]
        assert len(seen) == len(set(seen)) == 48
    assert [_rows(b) for b in streams[0][:per_epoch]] != [_rows(b) for b in streams[0][per_epoch:]]


def test_fewer_pairs_than_one_global_batch_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"7 training pairs are fewer than one global batch \(2 workers x 4\)"
    ):
        next(pair_batches(_pairs(7), batch_size=4, rank=0, world=2, seed=0))
