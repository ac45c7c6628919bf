"""The input table img2dataset reads is written in parts of whole shards as the url table streams past
the screen: the parts hold the kept rows in order, each part but the last a multiple of the shard size,
whatever the batch sizes were; screened-out rows are kept with their whole-table row numbers."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from pipelines.download import input_parts
from pipelines.download.config import INPUT_DIR, SCREENED_OUT


def _batches(sizes: list[int]):
    start = 0
    for size in sizes:
        rows = range(start, start + size)
        yield pa.table(
            {
                "url": [f"http://h/{i}.jpg" if i % 13 else "not a url" for i in rows],
                "caption": [str(i) for i in rows],
            }
        )
        start += size


def test_parts_are_whole_shards_and_hold_the_kept_rows_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(input_parts, "PART_ROWS", 100)
    artifact = ArtifactDir(str(tmp_path))
    artifact.write_parquet_atomic(f"{INPUT_DIR}/part-00099.parquet", pa.table({"url": ["stale"]}))
    screened = input_parts.write_input_parts(
        artifact, _batches([37, 250, 3, 181]), "url", samples_per_shard=30
    )
    parts = artifact.list(INPUT_DIR)
    assert parts == [f"part-{i:05d}.parquet" for i in range(len(parts))]  # the stale part is gone
    sizes = [pq.read_metadata(artifact.child_path(f"{INPUT_DIR}/{p}")).num_rows for p in parts]
    assert all(size == 90 for size in sizes[:-1]) and 0 < sizes[-1] <= 90
    kept = pa.concat_tables([pq.read_table(artifact.child_path(f"{INPUT_DIR}/{p}")) for p in parts])
    assert kept["caption"].to_pylist() == [str(i) for i in range(471) if i % 13]
    rejected = pq.read_table(artifact.child_path(SCREENED_OUT))
    assert rejected["row"].to_pylist() == [i for i in range(471) if i % 13 == 0]
    assert (screened.num_rows, screened.num_kept) == (471, kept.num_rows)
