"""img2dataset's webdataset writer, with every shard written in key order.

img2dataset writes a shard's samples in the order its download threads finish, which differs from run to
run: two cold downloads of the same urls give the same samples in other orders, and every stage that deals
samples in file order (the vision loader, the text pairs' negatives) then trains another model under the
same key. This writer takes img2dataset's samples into a local scratch tar as they come, and on close
writes the shard's tar and status parquet sorted by key, so a shard is a function of its urls alone.
img2dataset writes the shard's `_stats.json` after close, so a shard that has stats is a sorted one; a
shard killed before is redone whole, as before.

It runs inside img2dataset's download processes (or Ray tasks), beside the shard it writes: the extra
pass is one local read of a shard just written, never a pass over the dataset in one process.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds


def member_key(name: str) -> str:
    """The sample key of a webdataset member name ("000010004.jpg" -> "000010004")."""
    folder, _, base = name.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}" if folder else base.split(".", 1)[0]


def copy_tar_in_key_order(source: str, fileobj) -> int:
    """Every member of the tar at `source` into `fileobj`, grouped by sample key in key order (a sample's
    members keep their order) with mtime 0, so equal samples give equal bytes; returns the samples."""
    with tarfile.open(source, "r") as scratch:
        by_key: dict[str, list[tarfile.TarInfo]] = {}
        for member in scratch.getmembers():
            by_key.setdefault(member_key(member.name), []).append(member)
        with tarfile.open(fileobj=fileobj, mode="w|") as out:
            for key in sorted(by_key):
                for member in by_key[key]:
                    member.mtime = 0
                    out.addfile(member, scratch.extractfile(member))
    return len(by_key)


class KeySortedShardWriter:
    """Same constructor and contract as img2dataset.writer.WebDatasetSampleWriter (img2dataset builds
    one per shard in its download process); the shard lands in key order on close."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        shard_name = f"{shard_id:0{oom_shard_count}d}"
        self.fs, output_path = fsspec.core.url_to_fs(output_folder)
        self.tar_path = f"{output_path}/{shard_name}.tar"
        self.parquet_path = f"{output_path}/{shard_name}.parquet"
        self.save_caption = save_caption
        self.schema = schema
        self.encode_format = encode_format
        handle, self.scratch_path = tempfile.mkstemp(prefix=f"shard-{shard_name}-", suffix=".tar")
        os.close(handle)
        self.tarwriter = wds.TarWriter(self.scratch_path, mtime=0)
        self.rows: list[dict] = []  # the status table's rows: small (no image bytes)

    def write(self, img_str, key, caption, meta):
        meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()}
        if img_str is not None:
            sample = {"__key__": key, self.encode_format: img_str}
            if self.save_caption:
                sample["txt"] = str(caption) if caption is not None else ""
            sample["json"] = json.dumps(meta, indent=4)
            self.tarwriter.write(sample)
        self.rows.append(meta)

    def close(self):
        self.tarwriter.close()
        try:
            with self.fs.open(self.tar_path, "wb") as out:
                copy_tar_in_key_order(self.scratch_path, out)
        finally:
            Path(self.scratch_path).unlink()
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        if "key" in table.column_names:
            table = table.sort_by("key")
        with self.fs.open(self.parquet_path, "wb") as out:
            pq.write_table(table, out)
