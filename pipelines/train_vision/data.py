"""The vision stage's loader: image shards joined with their embedding sidecars by key, streamed per
worker, deterministic so that a checkpoint can name the data position.

The training samples are dealt to workers as contiguous ranges of equal size: in sorted shard order,
worker r of W takes training samples [r N / W, (r + 1) N / W) of the N in all, so every worker gets data
however few shards there are, and reads only the shards its range touches (a span of each). Each epoch a
worker reads its spans in a seeded order, in blocks of shuffle_buffer samples each drawn in a seeded order
(epoch_stream.py). The position (epoch, batches taken in it, the stream's snapshot) restores exactly, by
seeking: a resumed run reads its block again (about a shard), not the epoch so far, and sees the same next
batch as an uninterrupted one. No Ray here, so the
loop also runs in one process.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import fsspec
import pyarrow.parquet as pq
import torch

from ops.embedding_sidecar import field_matrix
from ops.webdataset_io import iter_samples, shard_id_of
from pipelines.train_vision.decode import collate, decode_ahead
from pipelines.train_vision.epoch_stream import EpochStream
from pipelines.train_vision.records import BatchDraw, DataPosition, JoinedSample, LoaderSettings
from pipelines.train_vision.sample_plan import shard_splits


def joined_samples(tar_path: str, sidecar_uri: str) -> Iterator[JoinedSample]:
    """A shard's samples with their sidecar rows (the keys must match one to one, in order) and their
    split from the shard's status table (sample_plan.shard_splits)."""
    fs, _ = fsspec.core.url_to_fs(tar_path)
    splits = shard_splits(tar_path)
    with fsspec.open(sidecar_uri, "rb") as handle:
        table = pq.read_table(handle)
    keys = table["key"].to_pylist()
    fields = {name: field_matrix(table, name) for name in ("original", "dense") if name in table.column_names}
    row = 0
    for sample in iter_samples(fs, tar_path):
        if "jpg" not in sample:
            continue
        if row >= len(keys) or keys[row] != sample["key"]:
            found = keys[row] if row < len(keys) else "the end of the sidecar"
            raise ValueError(
                f"{sidecar_uri}: row {row} is {found!r} but {tar_path} has sample {sample['key']!r}; "
                "the sidecar does not belong to this shard (rerun embed)"
            )
        vectors = {
            name: (matrix[row] if present[row] else None) for name, (matrix, present) in fields.items()
        }
        yield JoinedSample(
            sample["key"],
            sample["jpg"],
            vectors.get("original"),
            vectors.get("dense"),
            splits.get(sample["key"]),
            tar_path,
        )
        row += 1
    if row != len(keys):
        raise ValueError(f"{sidecar_uri}: {len(keys)} rows but {tar_path} has {row} samples")


@dataclasses.dataclass(frozen=True)
class ShardSpan:
    """Training samples [start, stop) of one shard, counted among that shard's training samples."""

    tar_path: str
    start: int = 0
    stop: int | None = None  # None: to the shard's end


def deal_training_samples(counts: dict[str, int], world: int) -> list[list[ShardSpan]]:
    """Per worker, its spans: equal contiguous ranges of the training samples in sorted shard order.
    `counts` is each shard's number of training samples."""
    total = sum(counts.values())
    bounds = [total * r // world for r in range(world + 1)]
    spans: list[list[ShardSpan]] = [[] for _ in range(world)]
    offset = 0
    for tar_path in sorted(counts):
        size = counts[tar_path]
        for rank in range(world):
            low, high = max(bounds[rank], offset), min(bounds[rank + 1], offset + size)
            if low < high:
                spans[rank].append(ShardSpan(tar_path, low - offset, high - offset))
        offset += size
    return spans


def is_training(sample: JoinedSample, settings: LoaderSettings) -> bool:
    """The rule sample_plan.plan_samples counts by: a caption feature present, the training split (or
    none), not held out."""
    return (
        (sample.original is not None or sample.dense is not None)
        and (settings.split is None or sample.split is None or sample.split == settings.split)
        and sample.key not in settings.held_out_keys
    )


def span_samples(
    span: ShardSpan, sidecars: dict[str, str], settings: LoaderSettings
) -> Iterator[JoinedSample]:
    index = 0
    for sample in joined_samples(span.tar_path, sidecars[shard_id_of(span.tar_path)]):
        if not is_training(sample, settings):
            continue
        if span.stop is not None and index >= span.stop:
            return
        if index >= span.start:
            yield sample
        index += 1


def training_batches(
    tar_paths: list[str],
    sidecars: dict[str, str],
    settings: LoaderSettings,
    rank: int,
    world: int,
    position: DataPosition,
    training_counts: dict[str, int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (pixel_values, llm_embeddings) batches from `position` on; `position` is updated in place
        as batches are handed out (a position with a stream snapshot is sought, one without one is read from
    its epoch's start, skipped batches not decoded). `training_counts` (training
        samples per shard) deals the samples to workers; one worker (world 1) takes every shard whole. With
        settings.decode_processes > 0 the images are decoded and augmented in that many processes, ahead of
        the step; every batch is a function of its seed alone, so the batches are the same either way. An
        image that does not decode is replaced by a spare (BatchDraw) and recorded in position.undecodable."""
    if training_counts is None:
        if world != 1:
            raise ValueError("training_counts are needed to deal samples to more than one worker")
        mine = [ShardSpan(p) for p in sorted(tar_paths)]
    else:
        mine = deal_training_samples(training_counts, world)[rank]
    snapshots: dict[tuple[int, int], tuple[dict, int]] = {}
    jobs = _batch_jobs(mine, sidecars, settings, rank, position, snapshots)
    if settings.decode_processes > 0:
        decoded = decode_ahead(jobs, collate, settings, settings.decode_processes, settings.prefetch_batches)
    else:
        decoded = ((epoch, index, collate(chunk, settings, seed)) for epoch, index, chunk, seed in jobs)
    found = {tuple(entry) for entry in position.undecodable}
    for epoch, index, (pixels, features, skipped) in decoded:
        position.epoch, position.batches_in_epoch = epoch, index + 1
        position.stream, position.carried = snapshots.pop((epoch, index))
        if skipped and not found.issuperset(skipped):
            found.update(skipped)
            position.undecodable = sorted([shard, key] for shard, key in found)
            print(f"[train_vision] rank {rank}: skipped undecodable images {skipped}", flush=True)
        yield pixels, features


def spare_samples(batch_size: int) -> int:
    """Spares a batch carries for images that turn out undecodable: 1 in 16, at least 2."""
    return max(2, batch_size // 16)


def _batch_jobs(
    mine: list[ShardSpan],
    sidecars: dict[str, str],
    settings: LoaderSettings,
    rank: int,
    position: DataPosition,
    snapshots: dict[tuple[int, int], tuple[dict, int]],
) -> Iterator[tuple[int, int, BatchDraw, str]]:
    """(epoch, index in the epoch, samples with spares, seed) of every batch from `position` on, endlessly;
    snapshots[(epoch, index)] is where the data stands once that batch is handed out. A batch's spares
    are the first samples of the next batch: whether one is needed is known only when the images are
    decoded (ahead, maybe in another process), and batches must stay a function of the data."""
    epoch, index = position.epoch, position.batches_in_epoch
    size, num_spares = settings.batch_size, spare_samples(settings.batch_size)
    resume = position.stream
    while True:
        stream = EpochStream(mine, sidecars, settings, rank, epoch, span_samples)
        if resume is not None:  # seek: the stream's state and the drawn samples, a few shards read
            window = stream.restore(resume, position.carried)
            skip, resume = 0, None
        else:  # from the epoch's start (a fresh epoch, or a position saved without a stream)
            window, skip, index = [], index, 0
        samples = iter(stream)
        window += list(itertools.islice(samples, size + num_spares - len(window)))
        # the last partial batch is dropped: every worker's step sees a full batch
        while len(window) >= size:
            if index >= skip:
                snapshots[(epoch, index)] = (stream.snapshot(), len(window) - size)
                yield (
                    epoch,
                    index,
                    BatchDraw(window[:size], window[size:]),
                    f"{settings.seed}/{epoch}/{rank}/{index}",
                )
            index += 1
            window = window[size:] + list(itertools.islice(samples, size))
        if index == 0:
            raise ValueError(f"worker {rank}: its shards hold fewer than one batch of {settings.batch_size}")
        epoch, index = epoch + 1, 0
