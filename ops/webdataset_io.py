"""Reading webdataset tar shards (img2dataset's output) without the webdataset package's pipeline machinery.

Samples are grouped by key (the file name up to the first dot), in the order they appear in the tar.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from typing import Any

import fsspec


def shard_id_of(path: str) -> str:
    """'.../00012.tar' -> '00012'."""
    return path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")


def list_shards(shards_uri: str) -> list[str]:
    """Tar paths (fsspec paths, not URIs) below shards_uri, sorted."""
    fs, path = fsspec.core.url_to_fs(shards_uri)
    return sorted(p for p in fs.ls(path, detail=False) if p.endswith(".tar"))


def iter_samples(fs: fsspec.AbstractFileSystem, tar_path: str) -> Iterator[dict[str, Any]]:
    """One dict per key: {'key': ..., '<ext>': bytes, ...}; json members are parsed."""
    with fs.open(tar_path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
        current: dict[str, Any] | None = None
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rsplit("/", 1)[-1].partition(".")
            data = tar.extractfile(member).read()
            if current is not None and current["key"] != key:
                yield current
                current = None
            if current is None:
                current = {"key": key}
            current[ext] = json.loads(data) if ext == "json" else data
        if current is not None:
            yield current


def count_samples(fs: fsspec.AbstractFileSystem, tar_path: str, image_ext: str = "jpg") -> int:
    """Keys that have an image member, read from the tar headers."""
    with fs.open(tar_path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
        return len(
            {m.name.rsplit("/", 1)[-1].partition(".")[0] for m in tar if m.name.endswith("." + image_ext)}
        )
