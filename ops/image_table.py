"""A table of images that sit in an artifact with their captions: parquet files under tables/, one row
per image with `key`, `split`, `image_path` (relative to the artifact) and caption columns. A stage that
makes images writes one (the demo's scenes); the download stage serves its images over loopback HTTP."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir

TABLES_DIR = "tables"


def read_image_table(
    artifact: ArtifactDir, split: str | None = None, empty: pa.Schema | None = None
) -> pa.Table:
    """All rows of the artifact's tables/{split}-*.parquet (every split when None), in key order; `empty`
    is the schema of the table returned when there is none."""
    names = [n for n in artifact.list(TABLES_DIR) if n.endswith(".parquet") and ".tmp-" not in n]
    if split is not None:
        names = [n for n in names if n.startswith(f"{split}-")]
    tables = []
    for name in names:
        with artifact.open(f"{TABLES_DIR}/{name}") as handle:
            tables.append(pq.read_table(handle))
    if not tables:
        return (empty or pa.schema([("key", pa.string()), ("image_path", pa.string())])).empty_table()
    return pa.concat_tables(tables).sort_by("key")
