"""download.caption_tables: captions someone else made (DreamLIP's short and long captions of CC3M/CC12M,
Recap-DataComp's re_caption) joined onto the downloaded or ingested samples by url or by key, as columns of
each shard's status table, where finetune_text and embed read captions. A recipe can then skip recaption.

An external hash join, so no process holds the table or the samples: the table's rows and the samples'
(shard, row, value) are each split into buckets by a hash of the value (on local disk), each bucket is
joined in memory, and the matches, sorted by (shard, row) per bucket, are merged back shard by shard. A
value repeated in the table keeps its first row. Counted: table rows, rows that matched a sample, samples
(successful ones) without a row.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.errors import BadInputError
from ops.text_digests import digests
from ops.url_table import iter_url_table
from pipelines.download.config import SHARDS_DIR, CaptionTable

BUCKET_ROWS = 1_000_000  # table rows per bucket, about: what one join holds in memory
JOINED = "caption_tables.json"  # the counts, written last: the join's completion marker


def _buckets_of(values: list[str], buckets: int) -> np.ndarray:
    return (digests(values) % np.uint64(buckets)).astype(np.int64)


def _bucket_count(spec: CaptionTable) -> int:
    """From the file's size: ~100 bytes a row is a generous guess for caption tables."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(spec.path)
    size = sum(fs.size(p) for p in (fs.find(path) if fs.isdir(path) else [path]))
    return max(1, math.ceil(size / 100 / BUCKET_ROWS))


class _Buckets:
    def __init__(self, folder: Path, name: str, count: int):
        self.paths = [folder / f"{name}-{b:04d}.parquet" for b in range(count)]
        self.writers: dict[int, pq.ParquetWriter] = {}

    def write(self, table: pa.Table, buckets: np.ndarray) -> None:
        for bucket in np.unique(buckets).tolist():
            part = table.filter(pa.array(buckets == bucket))
            if bucket not in self.writers:
                self.writers[bucket] = pq.ParquetWriter(self.paths[bucket], part.schema)
            self.writers[bucket].write_table(part)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def read(self, bucket: int) -> pa.Table | None:
        return pq.read_table(self.paths[bucket]) if bucket in self.writers else None


def _join_value(status: pa.Table, spec: CaptionTable) -> pa.Array:
    column = (
        "url" if spec.join_on == "url" else ("source_key" if "source_key" in status.column_names else "key")
    )
    return status[column]


def join_caption_tables(tables: tuple[CaptionTable, ...], artifact: ArtifactDir) -> dict[str, dict[str, int]]:
    """Adds each table's fields to every shard's status table; returns the counts per table."""
    if artifact.exists(JOINED):
        return artifact.read_json(JOINED)
    names = sorted(n for n in artifact.list(SHARDS_DIR) if n.endswith(".parquet") and ".tmp-" not in n)
    counts = {}
    for spec in tables:
        counts[spec.name] = _join_one(spec, artifact, names)
        print(f"[download] caption table {spec.name}: {counts[spec.name]}", flush=True)
    artifact.write_json_atomic(JOINED, counts)
    return counts


def _join_one(spec: CaptionTable, artifact: ArtifactDir, names: list[str]) -> dict[str, int]:
    count = _bucket_count(spec)
    fields = dict(spec.fields)
    with tempfile.TemporaryDirectory(prefix="caption-join-") as scratch:
        folder = Path(scratch)
        table_buckets, sample_buckets = _Buckets(folder, "table", count), _Buckets(folder, "samples", count)
        table_rows = 0
        for batch in iter_url_table(
            spec.path,
            input_format=spec.input_format,
            url_col=spec.join_col,
            caption_col=None,
            extra_columns=tuple(c for c in fields if c != spec.join_col),
        ):
            values = pc.fill_null(batch[spec.join_col], "").to_pylist()
            batch = batch.append_column(
                "_row", pa.array(range(table_rows, table_rows + batch.num_rows), pa.int64())
            )
            table_rows += batch.num_rows
            table_buckets.write(batch, _buckets_of(values, count))
        table_buckets.close()
        samples = 0
        for index, name in enumerate(names):
            with artifact.open(f"{SHARDS_DIR}/{name}") as handle:
                status = pq.read_table(handle)
            if spec.join_on == "url" and "url" not in status.column_names:
                raise BadInputError(
                    f"download.caption_tables[{spec.name}]: join_on url, but {name} has no url"
                )
            ok = np.flatnonzero(pc.equal(status["status"], "success").to_numpy(zero_copy_only=False))
            values = pc.take(_join_value(status, spec), pa.array(ok)).to_pylist()
            samples += len(ok)
            part = pa.table(
                {
                    "_shard": pa.array([index] * len(ok), pa.int32()),
                    "_at": pa.array(ok, pa.int64()),
                    "_value": values,
                }
            )
            sample_buckets.write(part, _buckets_of([v or "" for v in values], count))
        sample_buckets.close()
        runs, matched_rows, matched_samples = [], 0, 0
        for bucket in range(count):
            wanted, rows = sample_buckets.read(bucket), table_buckets.read(bucket)
            if wanted is None or rows is None:
                continue
            rows = rows.sort_by("_row")
            first = {}
            for position, value in enumerate(rows[spec.join_col].to_pylist()):
                first.setdefault(value, position)
            hits = [(i, first[v]) for i, v in enumerate(wanted["_value"].to_pylist()) if v in first]
            matched_rows += len({row for _, row in hits})
            matched_samples += len(hits)
            if hits:
                at, row = (pa.array(x, pa.int64()) for x in zip(*hits))
                joined = pa.table(
                    {
                        "_shard": pc.take(wanted["_shard"], at),
                        "_at": pc.take(wanted["_at"], at),
                        **{field: pc.take(rows[column], row) for column, field in fields.items()},
                    }
                ).sort_by([("_shard", "ascending"), ("_at", "ascending")])
                path = folder / f"joined-{bucket:04d}.parquet"
                pq.write_table(joined, path)
                runs.append(pq.read_table(path, memory_map=True))
        _write_back(artifact, names, runs, fields)
    return {
        "table_rows": table_rows,
        "rows_matched": matched_rows,
        "samples_without_row": samples - matched_samples,
    }


def _write_back(
    artifact: ArtifactDir, names: list[str], runs: list[pa.Table], fields: dict[str, str]
) -> None:
    """Each shard's status table with the fields (null where no row matched), shard by shard: each run
    (memory-mapped) gives its slice of the shard's matches."""
    starts = [0] * len(runs)
    shard_of = [
        np.asarray(run["_shard"].combine_chunks()) for run in runs
    ]  # sorted: a shard's rows are a slice
    for index, name in enumerate(names):
        with artifact.open(f"{SHARDS_DIR}/{name}") as handle:
            status = pq.read_table(handle)
        columns = {field: [None] * status.num_rows for field in fields.values()}
        for r, run in enumerate(runs):
            stop = int(np.searchsorted(shard_of[r], index, side="right"))
            part = run.slice(starts[r], stop - starts[r])
            starts[r] = stop
            for field in fields.values():
                for at, value in zip(part["_at"].to_pylist(), part[field].to_pylist()):
                    columns[field][at] = value
        for field, values in columns.items():
            array = pa.array(values, pa.string())
            if field in status.column_names:
                status = status.set_column(status.column_names.index(field), field, array)
            else:
                status = status.append_column(field, array)
        artifact.write_parquet_atomic(f"{SHARDS_DIR}/{name}", status)
