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
    replaced whole: an earlier run's parts go first. Each batch is written as it comes (memory holds one
    batch, whatever the part size)."""
    if artifact.exists(INPUT_DIR):
        artifact.fs.rm(artifact.child_path(INPUT_DIR), recursive=True)
    rows_per_part = samples_per_shard * max(1, PART_ROWS // samples_per_shard)
    screen = UrlScreen(url_col)
    kept = 0
    with contextlib.ExitStack() as stack:
        rejected_writer = part = None
        open_part = stack.enter_context(contextlib.ExitStack())  # the part being written, if any
        parts = part_rows = 0
        for batch in batches:
            good, bad = screen.screen(batch)
            if rejected_writer is None:
                rejected_writer = stack.enter_context(artifact.parquet_writer(SCREENED_OUT, bad.schema))
            rejected_writer.write_table(bad)
            kept += good.num_rows
            while good.num_rows:
                if part is None:
                    name = f"{INPUT_DIR}/part-{parts:05d}.parquet"
                    part = open_part.enter_context(artifact.parquet_writer(name, good.schema))
                taken = good.slice(0, rows_per_part - part_rows)
                part.write_table(taken)
                part_rows += taken.num_rows
                good = good.slice(taken.num_rows)
                if part_rows == rows_per_part:  # a whole number of shards: the part is published
                    open_part.close()
                    part, part_rows, parts = None, 0, parts + 1
    return Screened(num_rows=screen.rows, num_kept=kept)
