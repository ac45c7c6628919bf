"""The vision stage's loader: image shards joined with their embedding sidecars by key, streamed per
worker, deterministic so that a checkpoint can name the data position.

Shards are dealt to workers round-robin (shard i -> worker i % world); each epoch a worker reads its
shards in a seeded order through a seeded shuffle buffer. The position (epoch, batches taken in it)
restores exactly: a resumed run sees the same next batch as an uninterrupted one. No Ray here, so the
loop also runs in one process.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from ops.embedding_sidecar import field_matrix
from ops.errors import BadInputError
from ops.image_transforms import (
    ImageDecodeError,
    ImageTransformConfig,
    decode_rgb,
    eval_transform,
    train_transform,
)
from ops.webdataset_io import iter_samples, shard_id_of


@dataclasses.dataclass(frozen=True)
class JoinedSample:
    key: str
    jpg: bytes
    original: np.ndarray | None  # LLM embedding of the original caption (None: absent)
    dense: np.ndarray | None
    split: str | None
    tar_path: str = ""  # the shard it came from, for error messages


@dataclasses.dataclass
class DataPosition:
    epoch: int = 0
    batches_in_epoch: int = 0


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
class LoaderSettings:
    batch_size: int  # samples per worker per step
    dense_ratio: float  # share of samples that train on the dense caption's features (LLM2CLIP: 0.5)
    shuffle_buffer: int  # samples
    seed: int
    split: str | None = None  # keep only samples whose json `split` equals this (None: all)
    transform: ImageTransformConfig = dataclasses.field(default_factory=ImageTransformConfig)


def _worker_shards(tar_paths: list[str], rank: int, world: int) -> list[str]:
    mine = sorted(tar_paths)[rank::world]
    if not mine:
        raise ValueError(
            f"{len(tar_paths)} shards for {world} workers: worker {rank} has none; use fewer workers"
        )
    return mine


def _epoch_samples(
    tar_paths: list[str], sidecars: dict[str, str], settings: LoaderSettings, rank: int, epoch: int
) -> Iterator[JoinedSample]:
    rng = random.Random(f"{settings.seed}/{epoch}/{rank}")
    order = list(tar_paths)
    rng.shuffle(order)
    buffer: list[JoinedSample] = []
    for tar_path in order:
        for sample in joined_samples(tar_path, sidecars[shard_id_of(tar_path)]):
            if settings.split is not None and sample.split is not None and sample.split != settings.split:
                continue
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
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (pixel_values, llm_embeddings) batches from `position` on; `position` is updated in place
    as batches are handed out. Skipped batches are read but not decoded."""
    mine = _worker_shards(tar_paths, rank, world)
    while True:
        epoch = position.epoch
        samples = _epoch_samples(mine, sidecars, settings, rank, epoch)
        index = 0
        while True:
            chunk = [s for _, s in zip(range(settings.batch_size), samples)]
            if len(chunk) < settings.batch_size:
                break  # the last partial batch is dropped: every worker's step sees a full batch
            if index >= position.batches_in_epoch:
                batch = _collate(chunk, settings, f"{settings.seed}/{epoch}/{rank}/{index}")
                position.batches_in_epoch = index + 1
                yield batch
            index += 1
        if index == 0:
            raise ValueError(f"worker {rank}: its shards hold fewer than one batch of {settings.batch_size}")
        position.epoch, position.batches_in_epoch = epoch + 1, 0


def _decode(sample: JoinedSample) -> Image.Image:
    try:
        return decode_rgb(sample.jpg)
    except ImageDecodeError as err:
        raise BadInputError(
            f"{sample.tar_path}: sample {sample.key!r}: {err.reason} ({err}); vision training needs "
            "decodable images (the download stage re-encodes every image; recaption rejects bad ones)"
        ) from None


def _collate(
    chunk: list[JoinedSample], settings: LoaderSettings, seed: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and transform the images; per sample, the dense or the original caption's features
    (drawn with dense_ratio; an absent one falls back to the other)."""
    rng = random.Random(seed)
    pixels, features = [], []
    for sample in chunk:
        pixels.append(train_transform(_decode(sample), settings.transform, rng))
        use_dense = rng.random() < settings.dense_ratio
        vector = sample.dense if use_dense else sample.original
        if vector is None:
            vector = sample.original if use_dense else sample.dense
        if vector is None:
            raise ValueError(f"sample {sample.key}: no caption embedding at all")
        features.append(torch.from_numpy(np.asarray(vector, dtype=np.float32)))
    return torch.stack(pixels), torch.stack(features)


def eval_arrays(
    tar_paths: list[str],
    sidecars: dict[str, str],
    split: str | None,
    transform: ImageTransformConfig,
    fields: tuple[str, ...],
    max_samples: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per caption field, (pixel values, features) of at most max_samples held-out samples of `split`,
    in shard order; scanning stops once enough are found. Fields with no sample are left out."""
    found: dict[str, tuple[list, list]] = {field: ([], []) for field in fields}
    for tar_path in sorted(tar_paths):
        if all(len(found[f][0]) >= max_samples for f in fields):
            break
        for sample in joined_samples(tar_path, sidecars[shard_id_of(tar_path)]):
            if split is not None and sample.split != split:
                continue
            pixels = None
            for field in fields:
                vector = getattr(sample, field)
                if vector is None or len(found[field][0]) >= max_samples:
                    continue
                pixels = pixels if pixels is not None else eval_transform(_decode(sample), transform)
                found[field][0].append(pixels)
                found[field][1].append(torch.from_numpy(np.asarray(vector, dtype=np.float32)))
    return {field: (torch.stack(p), torch.stack(f)) for field, (p, f) in found.items() if p}
