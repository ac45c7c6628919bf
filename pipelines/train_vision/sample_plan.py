"""Which samples train_vision trains on and which it holds out, decided once on the driver from metadata
alone: each shard's embedding sidecar (keys, which caption fields are present) and img2dataset's status
table beside the tar (the `split` column), never an image byte.

- A sample trains when it has at least one present caption field (embed keeps a sample whose captions it
  rejected as a row with `present` false: it is skipped and counted as `no_caption_features`), its split
  is absent or the training split, and it is not held out.
- Held out: up to num_eval_samples samples, of the eval split when the data has one (a url table never
  does), else of the usable training samples. They are chosen by hash, shards in crc32 order of their
  names and samples in crc32 order of their keys within a shard, so the held-out set is a function of the
  keys, and it sits in as few shards as can hold it: rank 0 reads only those shards, not the dataset.
"""

from __future__ import annotations

import dataclasses
import zlib

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.webdataset_io import shard_id_of, status_table_of

NO_CAPTION_FEATURES = "no_caption_features"
UNDECODABLE_IMAGE = "undecodable_image"
REJECTED_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string()), ("reason", pa.string())])


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    training_counts: dict[str, int]  # tar path -> samples it trains on (deals them to workers)
    held_out: dict[str, tuple[str, ...]]  # tar path -> its held-out keys (only shards that hold some)
    num_samples: int  # sidecar rows: every sample the shards hold
    no_caption: int  # samples without any caption features (rejected rows written by plan_samples)

    @property
    def held_out_keys(self) -> frozenset[str]:
        return frozenset(key for keys in self.held_out.values() for key in keys)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def shard_splits(tar_path: str) -> dict[str, str | None]:
    """key -> split, from img2dataset's status table beside the tar (its `split` column, which the
    samples' json carries too); empty when the table or the column is absent. The driver and the workers
    both read the split from here, so they agree on which samples train."""
    fs, status_path = status_table_of(tar_path)
    if not fs.exists(status_path):
        return {}
    with fs.open(status_path, "rb") as handle:
        names = pq.read_schema(handle).names
        if "split" not in names or "key" not in names:
            return {}
        status = pq.read_table(handle, columns=["key", "split"])
    return dict(zip(status["key"].to_pylist(), status["split"].to_pylist()))


def _has_split(tar_path: str, split: str) -> bool:
    fs, status_path = status_table_of(tar_path)
    if not fs.exists(status_path):
        return False
    with fs.open(status_path, "rb") as handle:
        if "split" not in pq.read_schema(handle).names:
            return False
        column = pq.read_table(handle, columns=["split"])["split"]
    return bool(pc.any(pc.equal(column, split)).as_py())


def _captioned(sidecar_uri: str) -> tuple[list[str], list[bool]]:
    """(keys in sidecar order, whether each has at least one present caption field)."""
    with fsspec.open(sidecar_uri, "rb") as handle:
        present_columns = [name for name in pq.read_schema(handle).names if name.endswith("_present")]
        table = pq.read_table(handle, columns=["key", *present_columns])
    usable = pa.array([False] * table.num_rows)
    for name in present_columns:
        usable = pc.or_(usable, pc.fill_null(table[name], False))
    return table["key"].to_pylist(), usable.to_pylist()


def plan_samples(
    tar_paths: list[str],
    sidecars: dict[str, str],
    train_split: str | None,
    eval_split: str,
    num_eval_samples: int,
    rejected_writer: pq.ParquetWriter | None = None,
) -> SamplePlan:
    """Metadata only, a shard at a time (memory holds one shard's keys and the held-out keys): whether the
    data has an eval split (stops at the first shard that has one), then every shard in hash order of its
    name. Samples without caption features go to `rejected_writer`."""
    has_eval_split = num_eval_samples > 0 and any(_has_split(p, eval_split) for p in tar_paths)
    counts: dict[str, int] = {}
    held_out: dict[str, tuple[str, ...]] = {}
    num_samples = no_caption = num_held_out = 0
    for tar_path in sorted(tar_paths, key=lambda path: (_crc(shard_id_of(path)), path)):
        keys, usable = _captioned(sidecars[shard_id_of(tar_path)])
        splits = shard_splits(tar_path)
        num_samples += len(keys)
        rejected = [key for key, ok in zip(keys, usable) if not ok]
        no_caption += len(rejected)
        if rejected and rejected_writer is not None:
            reasons = [NO_CAPTION_FEATURES] * len(rejected)
            rejected_writer.write_table(
                pa.table(
                    {"key": rejected, "shard": [tar_path] * len(rejected), "reason": reasons}, REJECTED_SCHEMA
                )
            )
        trainable = [
            key
            for key, ok in zip(keys, usable)
            if ok and (train_split is None or splits.get(key) in (None, train_split))
        ]
        if num_held_out < num_eval_samples:
            if has_eval_split:
                pool = [key for key, ok in zip(keys, usable) if ok and splits.get(key) == eval_split]
            else:
                pool = trainable
            chosen = sorted(pool, key=lambda key: (_crc(key), key))[: num_eval_samples - num_held_out]
            if chosen:
                held_out[tar_path] = tuple(sorted(chosen))
                num_held_out += len(chosen)
        taken = set(held_out.get(tar_path, ()))
        counts[tar_path] = sum(key not in taken for key in trainable)
    return SamplePlan(dict(sorted(counts.items())), dict(sorted(held_out.items())), num_samples, no_caption)
