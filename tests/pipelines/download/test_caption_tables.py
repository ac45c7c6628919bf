"""download.caption_tables: provided captions joined onto the samples by url or key, through buckets on
disk, written into each shard's status table; a repeated value keeps its first row, and table rows that
match no sample and samples with no row are counted. The same join whether the table fits one bucket or
is spread over many."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.artifact_dir import ArtifactDir
from ops.stage import StageContext
from pipelines.download import caption_tables
from pipelines.download.caption_tables import join_caption_tables
from pipelines.download.config import CaptionTable, DownloadConfig
from pipelines.download.stage import run_download
from tests.pipelines.download.test_ingest import _inputs


def _fake_download(root, shards: int = 4, per_shard: int = 25) -> ArtifactDir:
    artifact = ArtifactDir(str(root / "dl"))
    for shard in range(shards):
        numbers = range(shard * per_shard, (shard + 1) * per_shard)
        table = {
            "key": [f"{shard:05d}{i:04d}" for i in range(per_shard)],
            "status": ["failed_to_download" if n % 10 == 9 else "success" for n in numbers],
            "url": [f"http://h/{n}.jpg" for n in numbers],
            "caption": [f"alt {n}" for n in numbers],
        }
        artifact.write_parquet_atomic(f"shards/{shard:05d}.parquet", pa.table(table))
    return artifact


def _table(path, numbers, extra_rows=()) -> str:
    rows = [
        {"image": f"http://h/{n}.jpg", "long": f"long caption {n}", "short": f"short {n}"} for n in numbers
    ]
    rows += list(extra_rows)
    with open(path, "w") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("bucket_rows", [1_000_000, 7])
def test_a_table_joined_by_url_fills_the_status_tables(tmp_path, monkeypatch, bucket_rows):
    monkeypatch.setattr(caption_tables, "BUCKET_ROWS", bucket_rows)  # 7: the table spreads over buckets
    artifact = _fake_download(tmp_path)
    extra = [
        {"image": "http://h/3.jpg", "long": "a second row for 3", "short": "x"},  # repeated: the first wins
        {"image": "http://elsewhere/1.jpg", "long": "no such sample", "short": "y"},
    ]
    path = _table(tmp_path / "dreamlip.jsonl", [n for n in range(100) if n % 4], extra)
    spec = CaptionTable(
        name="dreamlip",
        path=path,
        join_col="image",
        fields={"long": "dense_caption", "short": "short_dense_caption"},
    )
    counts = join_caption_tables((spec,), artifact)
    successes = [n for n in range(100) if n % 10 != 9]
    matched = [n for n in successes if n % 4]
    assert counts == {
        "dreamlip": {
            "table_rows": 75 + 2,
            "rows_matched": len(matched),
            "samples_without_row": len(successes) - len(matched),
        }
    }
    rows = [
        r
        for s in range(4)
        for r in pq.read_table(tmp_path / "dl" / "shards" / f"{s:05d}.parquet").to_pylist()
    ]
    for n, row in enumerate(rows):
        if row["status"] == "success" and n % 4:
            assert (row["dense_caption"], row["short_dense_caption"]) == (f"long caption {n}", f"short {n}")
        else:
            assert row["dense_caption"] is None
    assert join_caption_tables((spec,), artifact) == counts  # done once: a rerun reads the counts


def test_a_table_joined_by_the_users_key_after_an_ingest(tmp_path):
    folder, _ = _inputs(tmp_path / "input")
    rows = [{"id": f"a{i:03d}", "re_caption": f"recap of a{i}"} for i in range(0, 30, 3)]
    (tmp_path / "recap.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = CaptionTable(
        name="recap",
        path=str(tmp_path / "recap.jsonl"),
        join_on="key",
        join_col="id",
        fields={"re_caption": "dense_caption"},
    )
    config = DownloadConfig(
        shards=str(folder), samples_per_shard=16, resize_mode="no", caption_tables=(spec,)
    )
    outcome = run_download(config, StageContext(ArtifactDir(str(tmp_path / "dl")), {}))
    counts = outcome.details["caption_tables"]["recap"]
    assert counts["table_rows"] == 10 and counts["rows_matched"] == 10  # a000, a003, ..., a027
    status = [
        r
        for p in sorted((tmp_path / "dl" / "shards").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    by_key = {r["source_key"]: r["dense_caption"] for r in status}
    assert by_key["a003"] == "recap of a3" and by_key["a004"] is None
    assert counts["samples_without_row"] == outcome.counts.num_out - 10
    assert outcome.metrics["caption_table_recap_rows_matched"] == 10
