"""The vision stage's loader: image shards joined with their embedding sidecars by key, streamed per
worker, deterministic so that a checkpoint can name the data position.

The training samples are dealt to workers as contiguous ranges of equal size: in sorted shard order,
worker r of W takes training samples [r N / W, (r + 1) N / W) of the N in all, so every worker gets data
however few shards there are, and reads only the shards its range touches (a span of each). Each epoch a
worker reads its spans in a seeded order through a seeded shuffle buffer. The position (epoch, batches
taken in it) restores exactly: a resumed run sees the same next batch as an uninterrupted one. No Ray
here, so the loop also runs in one process.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import fsspec
import pyarrow.parquet as pq
import torch

from ops.embedding_sidecar import field_matrix
from ops.webdataset_io import iter_samples, shard_id_of
from pipelines.train_vision.decode import collate, decode_ahead
from pipelines.train_vision.records import DataPosition, JoinedSample, LoaderSettings


def joined_samples(tar_path: str, sidecar_uri: str) -> Iterator[JoinedSample]:
    """A shard's samples with their sidecar rows; the keys must match one to one, in order."""
    fs, _ = fsspec.core.url_to_fs(tar_path)
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
        meta = sample.get("json") or {}
        yield JoinedSample(
            sample["key"],
            sample["jpg"],
            vectors.get("original"),
            vectors.get("dense"),
            meta.get("split"),
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


def training_sample_counts(tar_paths: list[str], split: str | None) -> dict[str, int]:
    """Training samples per shard (those whose json `split` is absent or equals `split`), from
    img2dataset's per-shard status table beside each tar (`<shard>.parquet`: rows with status
    "success"); a shard without that table is read through instead."""
    counts = {}
    for tar_path in tar_paths:
        fs, path = fsspec.core.url_to_fs(tar_path)
        status_table = path.removesuffix(".tar") + ".parquet"
        if fs.exists(status_table):
            with fs.open(status_table, "rb") as handle:
                table = pq.read_table(handle)
            rows = [
                row
                for row in table.select(
                    [c for c in ("status", "split") if c in table.column_names]
                ).to_pylist()
                if row.get("status", "success") == "success"
            ]
            counts[tar_path] = sum(split is None or row.get("split") in (None, split) for row in rows)
        else:
            counts[tar_path] = sum(
                "jpg" in sample
                and (split is None or (sample.get("json") or {}).get("split") in (None, split))
                for sample in iter_samples(fs, tar_path)
            )
    return counts


def _is_training(sample: JoinedSample, split: str | None) -> bool:
    return split is None or sample.split is None or sample.split == split


def span_samples(span: ShardSpan, sidecars: dict[str, str], split: str | None) -> Iterator[JoinedSample]:
    index = 0
    for sample in joined_samples(span.tar_path, sidecars[shard_id_of(span.tar_path)]):
        if not _is_training(sample, split):
            continue
        if span.stop is not None and index >= span.stop:
            return
        if index >= span.start:
            yield sample
        index += 1


def _epoch_samples(
    spans: list[ShardSpan], sidecars: dict[str, str], settings: LoaderSettings, rank: int, epoch: int
) -> Iterator[JoinedSample]:
    rng = random.Random(f"{settings.seed}/{epoch}/{rank}")
    order = list(spans)
    rng.shuffle(order)
    buffer: list[JoinedSample] = []
    for span in order:
        for sample in span_samples(span, sidecars, settings.split):
            buffer.append(sample)
            if len(buffer) >= settings.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


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
    as batches are handed out. Skipped batches are read but not decoded. `training_counts` (training
    samples per shard) deals the samples to workers; one worker (world 1) takes every shard whole. With
    settings.decode_processes > 0 the images are decoded and augmented in that many processes, ahead of
    the step; every batch is a function of its seed alone, so the batches are the same either way."""
    if training_counts is None:
        if world != 1:
            raise ValueError("training_counts are needed to deal samples to more than one worker")
        mine = [ShardSpan(p) for p in sorted(tar_paths)]
    else:
        mine = deal_training_samples(training_counts, world)[rank]
    jobs = _batch_jobs(mine, sidecars, settings, rank, position)
    if settings.decode_processes > 0:
        decoded = decode_ahead(jobs, collate, settings, settings.decode_processes, settings.prefetch_batches)
    else:
        decoded = ((epoch, index, collate(chunk, settings, seed)) for epoch, index, chunk, seed in jobs)
    for epoch, index, batch in decoded:
        position.epoch, position.batches_in_epoch = epoch, index + 1
        yield batch


def _batch_jobs(
    mine: list[ShardSpan],
    sidecars: dict[str, str],
    settings: LoaderSettings,
    rank: int,
    position: DataPosition,
) -> Iterator[tuple[int, int, list[JoinedSample], str]]:
    """(epoch, index in the epoch, samples, seed) of every batch from `position` on, endlessly."""
    epoch, skip = position.epoch, position.batches_in_epoch
    while True:
        samples = _epoch_samples(mine, sidecars, settings, rank, epoch)
        index = 0
        while True:
            chunk = [s for _, s in zip(range(settings.batch_size), samples)]
            if len(chunk) < settings.batch_size:
                break  # the last partial batch is dropped: every worker's step sees a full batch
            if index >= skip:
                yield epoch, index, chunk, f"{settings.seed}/{epoch}/{rank}/{index}"
            index += 1
        if index == 0:
            raise ValueError(f"worker {rank}: its shards hold fewer than one batch of {settings.batch_size}")
        epoch, skip = epoch + 1, 0
