"""A shard's bytes are a function of its samples, not of the order img2dataset's threads finished in."""

from __future__ import annotations

import io
import random
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.download.sorted_writer import KeySortedShardWriter

SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("caption", pa.string())])


def _write_shard(folder, order: list[int]) -> tuple[bytes, bytes]:
    writer = KeySortedShardWriter(7, str(folder), True, 5, SCHEMA, "jpg")
    for i in order:
        key = f"{70000 + i:09d}"
        ok = i % 5 != 3  # some rows failed: in the status table, not in the tar
        meta = {"key": key, "status": "success" if ok else "failed_to_download", "caption": f"c{i}"}
        writer.write(bytes([i]) * 50 if ok else None, key, f"c{i}", meta)
    writer.close()
    return (folder / "00007.tar").read_bytes(), (folder / "00007.parquet").read_bytes()


def test_two_finishing_orders_give_the_same_shard_bytes(tmp_path):
    order = list(range(12))
    shuffled = order[:]
    random.Random(3).shuffle(shuffled)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tar_a, parquet_a = _write_shard(tmp_path / "a", order)
    tar_b, parquet_b = _write_shard(tmp_path / "b", shuffled)
    assert tar_a == tar_b
    assert pq.read_table(io.BytesIO(parquet_a)).equals(pq.read_table(io.BytesIO(parquet_b)))

    with tarfile.open(fileobj=io.BytesIO(tar_b)) as tar:
        names = tar.getnames()
        keys = [n.split(".", 1)[0] for n in names]
        assert keys == sorted(keys) and len(set(keys)) == 12 - 2
        assert sorted(names[:3]) == ["000070000.jpg", "000070000.json", "000070000.txt"]
        assert tar.extractfile("000070004.jpg").read() == bytes([4]) * 50
    status = pq.read_table(io.BytesIO(parquet_b)).to_pylist()
    assert [row["key"] for row in status] == [f"{70000 + i:09d}" for i in order]
    assert sum(row["status"] != "success" for row in status) == 2
    assert not list(tmp_path.glob("**/shard-*"))  # the scratch tar is gone
