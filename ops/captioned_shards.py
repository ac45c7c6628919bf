"""Captions of webdataset samples by field name, and every sample of a shard folder: what embed,
evaluate and the long-caption experiment read, so that a field means the same thing in each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec

from ops.webdataset_io import iter_samples, list_shards

ORIGINAL = "original"  # the alt-text: the .txt member (img2dataset's caption), else the json "caption"


def caption_of(sample: dict[str, Any], field: str) -> str | None:
    """The sample's caption named `field`: ORIGINAL, or a field of its json (dense_caption, ...). A
    missing, blank or non-string value gives None."""
    meta = sample.get("json") or {}
    if field == ORIGINAL:
        text = sample["txt"].decode("utf-8", "replace") if "txt" in sample else meta.get("caption")
    else:
        text = meta.get(field)
    return text if isinstance(text, str) and text.strip() else None


def iter_shard_folder(shards_uri: str, duplicates: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(tar path, sample) for every sample of every shard, in sorted shard order (see iter_samples)."""
    fs, _ = fsspec.core.url_to_fs(shards_uri)
    for tar_path in list_shards(shards_uri):
        for sample in iter_samples(fs, tar_path, duplicates):
            yield tar_path, sample
