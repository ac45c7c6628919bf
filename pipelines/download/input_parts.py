"""The table img2dataset reads, written in parts as the url table streams past the screen: each part a
whole number of shards (img2dataset cuts shards per input file and reads each file whole), so shard n
holds the same rows however the input was batched, and no process holds the table."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable

import pyarrow as pa

from ops.artifact_dir import ArtifactDir
from ops.url_table import UrlScreen
from pipelines.download.config import INPUT_DIR, SCREENED_OUT

PART_ROWS = 1_000_000  # rows per part, rounded down to whole shards


@dataclasses.dataclass(frozen=True)
class Screened:
    num_rows: int  # rows of the url table (after num_samples)
    num_kept: int  # rows written to the parts, for img2dataset


def write_input_parts(
    artifact: ArtifactDir, batches: Iterable[pa.Table], url_col: str, samples_per_shard: int
) -> Screened:
    """input/part-*.parquet (rows kept) and screened_out.parquet (rows rejected, with reasons), both
    replaced whole: an earlier run's parts go first."""
    if artifact.exists(INPUT_DIR):
        artifact.fs.rm(artifact.child_path(INPUT_DIR), recursive=True)
    rows_per_part = samples_per_shard * max(1, PART_ROWS // samples_per_shard)
    screen = UrlScreen(url_col)
    pending: list[pa.Table] = []
    pending_rows = parts = kept = 0
    with contextlib.ExitStack() as stack:
        rejected_writer = None
        for batch in batches:
            good, bad = screen.screen(batch)
            if rejected_writer is None:
                rejected_writer = stack.enter_context(artifact.parquet_writer(SCREENED_OUT, bad.schema))
            rejected_writer.write_table(bad)
            pending.append(good)
            pending_rows += good.num_rows
            kept += good.num_rows
            while pending_rows >= rows_per_part:
                pending, pending_rows = (
                    _write_part(artifact, pending, rows_per_part, parts),
                    pending_rows - rows_per_part,
                )
                parts += 1
        if pending_rows:
            _write_part(artifact, pending, pending_rows, parts)
    return Screened(num_rows=screen.rows, num_kept=kept)


def _write_part(artifact: ArtifactDir, pending: list[pa.Table], rows: int, index: int) -> list[pa.Table]:
    """Writes the first rows of pending as part `index`; returns what is left."""
    table = pa.concat_tables(pending)
    artifact.write_parquet_atomic(f"{INPUT_DIR}/part-{index:05d}.parquet", table.slice(0, rows))
    rest = table.slice(rows)
    return [rest] if rest.num_rows else []
