"""Reading webdataset tar shards (img2dataset's output) without the webdataset package's pipeline machinery.

Samples are grouped by key (the file name up to the first dot), in the order they appear in the tar.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

import fsspec

from ops.artifact_dir import ArtifactDir
from ops.errors import BadInputError


def shard_id_of(path: str) -> str:
    """'.../00012.tar' -> '00012'."""
    return path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")


def status_table_of(tar_path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) of img2dataset's per-shard status table beside a tar (`00012.parquet`)."""
    fs, path = fsspec.core.url_to_fs(tar_path)
    return fs, path.removesuffix(".tar") + ".parquet"


def list_shards(shards_uri: str) -> list[str]:
    """Tar shards below shards_uri, sorted: local paths, or full URIs (s3://...) on an object store, so
    that a Ray worker on any node that gets one finds the shard again (fsspec.core.url_to_fs)."""
    shards = ArtifactDir(shards_uri)
    names = [name for name in shards.list() if name.endswith(".tar")]  # sorted, listing cache dropped
    return [shards.child_path(n) if shards.is_local else shards.child_uri(n) for n in names]


class ShardReadError(BadInputError):
    """A tar shard cannot be read to its end; the message names the shard and how far it got."""


def iter_samples(
    fs: fsspec.AbstractFileSystem, tar_path: str, duplicates: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """One dict per key: {'key': ..., '<ext>': bytes, ...}; json members are parsed.

    A key seen before in this shard (a repeated sample, or a member repeated within one) is not yielded
    again: the first occurrence wins and the repeat's key is appended to `duplicates`, so stages that
    count rejections can count it. A truncated or corrupt tar raises ShardReadError naming the shard."""
    seen: set[str] = set()
    current: dict[str, Any] | None = None

    def finish(sample: dict[str, Any]) -> dict[str, Any] | None:
        if sample["key"] in seen:
            if duplicates is not None:
                duplicates.append(sample["key"])
            return None
        seen.add(sample["key"])
        return sample

    try:
        with fs.open(tar_path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rsplit("/", 1)[-1].partition(".")
                data = tar.extractfile(member).read()
                if current is not None and (current["key"] != key or ext in current):
                    if (done := finish(current)) is not None:
                        yield done
                    current = None
                if current is None:
                    current = {"key": key}
                try:
                    current[ext] = json.loads(data) if ext == "json" else data
                except ValueError as err:
                    message = f"{tar_path}: member {member.name}: not valid JSON ({err})"
                    raise ShardReadError(message) from None
            check_end_of_archive(fs, tar_path, tar)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ShardReadError(
            f"{tar_path}: truncated or corrupt tar after {len(seen)} samples ({type(err).__name__}: {err}); "
            "re-create this shard (rerun its producing stage with --force) or remove it"
        ) from None
    if current is not None and (done := finish(current)) is not None:
        yield done


def check_end_of_archive(fs: fsspec.AbstractFileSystem, tar_path: str, tar: tarfile.TarFile) -> None:
    """A cut that lands between members reads as a clean end; a whole tar ends in two zero blocks."""
    if (
        getattr(tar.fileobj, "comptype", "tar") == "tar"
        and fs.size(tar_path) < tar.offset + 2 * tarfile.BLOCKSIZE
    ):
        raise tarfile.ReadError("no end-of-archive blocks after the last member")


def count_samples(fs: fsspec.AbstractFileSystem, tar_path: str, image_ext: str = "jpg") -> int:
    """Image members, read from the tar headers: every sample with an image, repeats of a key included
    (a stage rejects those as duplicate_key, so they count as input)."""
    try:
        with fs.open(tar_path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
            count = sum(1 for m in tar if m.name.endswith("." + image_ext))
            check_end_of_archive(fs, tar_path, tar)
            return count
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ShardReadError(f"{tar_path}: truncated or corrupt tar ({type(err).__name__}: {err})") from None
