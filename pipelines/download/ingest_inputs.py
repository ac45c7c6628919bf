"""What ingest reads (ingest.py says what it makes): the user's tars, or a folder of images read as a tar
would be, and per part the rows that give samples their captions: img2dataset's parquet beside a tar, or
the folder's caption table joined by file name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import fsspec
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.errors import BadInputError
from ops.tar_members import TarSample, Truncated, iter_folder_samples, iter_tar_samples
from pipelines.download.config import DownloadConfig


@dataclasses.dataclass
class InputSource:
    """What ingest reads: parts (tars, or one folder) whose samples come in order, and per part the
    table rows (key -> fields) that give samples their captions."""

    parts: list[str]
    samples: Callable[[int, int], Iterator[TarSample | Truncated]]  # (part, samples to skip) -> events
    rows: Callable[[int], dict[str, dict]]
    table_rows: int | None = None  # rows of a caption table joined by file name (None: no table)


def input_source(config: DownloadConfig) -> InputSource:
    if config.shards:
        fs, tars = input_tars(config.shards)
        return InputSource(
            tars,
            lambda part, skip: iter_tar_samples(fs, tars[part]),
            lambda part: status_rows(fs, tars[part]),
        )
    fs, root = fsspec.core.url_to_fs(config.image_folder)
    if not fs.isdir(root):
        raise BadInputError(f"download.image_folder: {config.image_folder} is not a folder")
    table = _caption_table(config) if config.captions else {}
    return InputSource(
        [root],
        lambda part, skip: iter_folder_samples(fs, root, skip),
        lambda part: table,
        table_rows=len(table) if config.captions else None,
    )


def _caption_table(config: DownloadConfig) -> dict[str, dict]:
    """download.captions, keyed as the folder's samples are (the file name without its extension)."""
    from ops.url_table import read_url_table

    columns = tuple(c for c in (config.caption_col, *config.extra_columns) if c)
    table = read_url_table(
        config.captions,
        input_format="auto",
        url_col=config.captions_file_col,
        caption_col=None,
        extra_columns=columns,
    )
    rows = {}
    for row in table.to_pylist():
        name = row.pop(config.captions_file_col).strip().lstrip("./")
        folder, _, base = name.rpartition("/")
        stem = base.partition(".")[0]
        if config.caption_col and config.caption_col != "caption":
            row["caption"] = row.pop(config.caption_col)
        rows[f"{folder}/{stem}" if folder else stem] = row
    return rows


def input_tars(spec: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The tars a `download.shards` value names: a folder (every .tar below it), a glob or one file."""
    fs, path = fsspec.core.url_to_fs(spec)
    if any(c in path for c in "*?["):
        tars = sorted(p for p in fs.glob(path) if p.endswith(".tar"))
    elif fs.isdir(path):
        tars = sorted(p for p in fs.find(path) if p.endswith(".tar"))
    else:
        tars = [path] if fs.exists(path) else []
    if not tars:
        raise BadInputError(f"download.shards: {spec} names no .tar file")
    return fs, tars


def status_rows(fs, tar: str) -> dict[str, dict]:
    """img2dataset's parquet beside the tar (key -> row), or nothing."""
    path = tar.removesuffix(".tar") + ".parquet"
    if not fs.exists(path):
        return {}
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle)
    if "key" not in table.column_names:
        return {}
    if "status" in table.column_names:
        table = table.filter(pc.equal(table["status"], "success"))
    return {row["key"]: row for row in table.to_pylist()}
