"""embed reads a shard's captions from its status table, not from its tar of JPEGs: the same keys, in
the tar's order, and the same captions as reading the tar, with the tar gone."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.embed.config import EmbedConfig
from pipelines.embed.embedder import shard_captions, status_table_captions
from tests.pipelines.embed.test_embed import write_shard


def test_captions_come_from_the_status_table_without_the_tar(tmp_path):
    tar = tmp_path / "00000.tar"
    write_shard(tar, 0, 9, drop_dense={4})
    rows = [  # the status table in the tar's order, with a failed url among the samples
        {"key": f"{i:06d}", "status": "success", "caption": f"a photo {i}", "dense_caption": None}
        for i in range(9)
    ]
    for i, row in enumerate(rows):
        if i != 4:
            row["dense_caption"] = _dense(tar, row["key"])
    rows.insert(
        3, {"key": "000100", "status": "failed_to_download", "caption": "gone", "dense_caption": None}
    )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "00000.parquet")
    fs = fsspec.filesystem("file")
    config = EmbedConfig()

    expected = _from_tar(fs, str(tar), config)
    assert shard_captions(fs, str(tar), config, None, []) == expected
    tar.unlink()  # not a byte of it is needed
    keys, fields = status_table_captions(fs, str(tar), config, None)
    assert (keys, fields) == expected and fields["dense"][4] is None and len(keys) == 9
    # a field the table lacks: back to the tar
    assert (
        status_table_captions(fs, str(tar), EmbedConfig(caption_fields=("original", "other")), None) is None
    )


def _dense(tar, key: str) -> str:
    import json
    import tarfile

    with tarfile.open(tar) as archive:
        return json.loads(archive.extractfile(f"{key}.json").read())["dense_caption"]


def _from_tar(fs, tar_path: str, config: EmbedConfig):
    """The tar's own captions (the status table moved aside)."""
    from pathlib import Path

    table = Path(tar_path).with_suffix(".parquet")
    aside = table.with_suffix(".aside")
    table.rename(aside)
    try:
        return shard_captions(fs, tar_path, config, None, [])
    finally:
        aside.rename(table)
