"""download.shards: a user's existing webdataset tars into the download stage's layout, so every later
stage reads them as it reads a download: validated, re-sharded to samples_per_shard, resized only when
the recipe asks (resize_mode: no keeps the bytes), every bad sample kept in the rejected sink.

Input: {key}.jpg/.jpeg/.png/.webp with .txt and/or .json (its "caption" field, and the recipe's
extra_columns), and img2dataset's per-shard parquet beside a tar where there is one (its caption, url and
extra columns win over the json's). Output per shard, as img2dataset writes: {n:05d}.tar ({key}.jpg, .txt,
.json), {n:05d}.parquet (status table, in the tar's order) and {n:05d}_stats.json (last: the completion
marker, with where the input stood after the shard). Keys are new (shard and index, as img2dataset's);
the user's key is kept as source_key.

Rejected, per sample: no_image, undecodable_image (not an image, or failed_to_resize with a resize),
duplicate_key (a key met before, in this tar or an earlier one), truncated_tar (the sample a cut-off tar
lost, one row per tar); per member, in rejected_members.parquet: unknown_extension (the sample is kept).
A killed ingest resumes after its last complete shard, from the input position that shard recorded.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.image_decode import ImageDecodeError, decode_rgb
from ops.tar_members import (
    IMAGE_EXTENSIONS,
    KNOWN_EXTENSIONS,
    TarSample,
)
from ops.text_digests import digest as text_digest
from pipelines.download.config import SHARDS_DIR, DownloadConfig

REJECTED_PARTS = "rejected_parts"  # per output shard: the samples rejected while it was filled
CHUNK = 256  # samples validated (and resized) at a time, in parallel


@dataclasses.dataclass
class Checked:
    """One input sample's verdict: the image bytes to write and its metadata, or a rejection."""

    sample: TarSample
    tar: str
    after: tuple[int, int]  # the input position after it: (tar index, sample ordinal)
    image: bytes | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    reason: str | None = None
    detail: str = ""


class SampleChecker:
    """Validates (and, when the recipe resizes, resizes as img2dataset does) samples in threads."""

    def __init__(self, config: DownloadConfig):
        self.config = config
        self.resizer = None
        if config.resize_mode != "no":
            from img2dataset.resizer import Resizer

            self.resizer = Resizer(
                image_size=config.image_size_px,
                resize_mode=config.resize_mode,
                resize_only_if_bigger=False,
                encode_quality=config.encode_quality,
                encode_format="jpg",
                max_image_area=float(config.max_image_area_px or "inf"),
            )
        self.pool = ThreadPoolExecutor(max(1, config.processes_count), thread_name_prefix="ingest")

    def check(self, items: list[Checked]) -> list[Checked]:
        return list(self.pool.map(self._check, items))

    def _check(self, item: Checked) -> Checked:
        if item.reason:
            return item
        ext = next((e for e in IMAGE_EXTENSIONS if e in item.sample.members), None)
        if ext is None:
            item.reason, item.detail = "no_image", f"members: {sorted(item.sample.members)}"
            return item
        data = item.sample.members[ext]
        try:
            image = decode_rgb(data)
        except ImageDecodeError as error:
            item.reason, item.detail = "undecodable_image", str(error)
            return item
        item.meta.update(original_width=image.width, original_height=image.height)
        if self.resizer is None:
            item.image = data
            item.meta.update(width=image.width, height=image.height)
            return item
        resized, width, height, _, _, error = self.resizer(io.BytesIO(data))
        if error is not None:
            item.reason, item.detail = "undecodable_image", f"failed_to_resize: {error}"
            return item
        item.image = resized
        item.meta.update(width=width, height=height)
        return item


def _caption_of(sample: TarSample, row: dict | None) -> tuple[str | None, dict]:
    """(caption, json fields) from the parquet row beside the tar, else the json, else the txt."""
    fields: dict[str, Any] = {}
    if "json" in sample.members:
        try:
            parsed = json.loads(sample.members["json"].decode("utf-8"))
            fields = parsed if isinstance(parsed, dict) else {}
        except (UnicodeDecodeError, ValueError):
            fields = {}
    if row:
        fields = {**fields, **{k: v for k, v in row.items() if v is not None}}
    caption = fields.get("caption")
    if caption is None and "txt" in sample.members:
        caption = sample.members["txt"].decode("utf-8", errors="replace").strip() or None
    return caption, fields


class Seen:
    """Keys met so far, as 8-byte digests (what a repeated key is checked against)."""

    def __init__(self):
        self.digests: set[int] = set()

    def add(self, key: str) -> bool:
        """True the first time a key is met."""
        digest = text_digest(key)
        if digest in self.digests:
            return False
        self.digests.add(digest)
        return True

    def has(self, key: str) -> bool:
        return text_digest(key) in self.digests


def write_shard(
    artifact: ArtifactDir,
    shard: int,
    accepted: list[Checked],
    rejected: list[dict],
    members: list[dict],
    extra_columns: tuple[str, ...],
    input_end: tuple[int, int],
    started: float,
    key_digits: int,
) -> None:
    """The tar, its status table, its rejected rows, then its stats (the completion marker)."""
    name = f"{SHARDS_DIR}/{shard:05d}"
    rows = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index, item in enumerate(accepted):
            key = f"{shard:05d}{index:0{key_digits}d}"
            caption, fields = _caption_of(item.sample, item.meta.pop("_row", None))
            meta = {
                "key": key,
                "status": "success",
                "caption": caption,
                "url": fields.get("url"),
                "source_key": item.sample.key,
                "source_tar": item.tar,
                "error_message": None,
                **item.meta,
                **{c: fields.get(c) for c in extra_columns},
            }
            rows.append(meta)
            files = [(f"{key}.jpg", item.image), (f"{key}.json", json.dumps(meta).encode())]
            if caption is not None:
                files.append((f"{key}.txt", caption.encode()))
            for file_name, data in files:
                info = tarfile.TarInfo(file_name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    artifact.write_bytes_atomic(f"{name}.tar", buffer.getvalue())
    status = pa.Table.from_pylist(rows) if rows else pa.table({"key": pa.array([], pa.string())})
    artifact.write_parquet_atomic(f"{name}.parquet", status)
    artifact.write_parquet_atomic(f"{REJECTED_PARTS}/{shard:05d}.parquet", rejected_table(rejected))
    artifact.write_parquet_atomic(f"{REJECTED_PARTS}/{shard:05d}_members.parquet", rejected_table(members))
    stats = {
        "count": len(accepted) + len(rejected),
        "successes": len(accepted),
        "failed_to_download": 0,
        "failed_to_resize": sum(r["reason"] == "undecodable_image" for r in rejected),
        "duration": time.perf_counter() - started,
        "input_end": list(input_end),
    }
    artifact.write_json_atomic(f"{name}_stats.json", stats)


def rejected_table(rows: list[dict]) -> pa.Table:
    schema = pa.schema(
        [(c, pa.string()) for c in ("source_key", "source_tar", "member", "reason", "error_message")]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def rejection(key: str, tar: str, reason: str, detail: str, member: str = "") -> dict:
    return {
        "source_key": key,
        "source_tar": tar,
        "member": member or None,
        "reason": reason,
        "error_message": detail,
    }


def seen_from_shards(artifact: ArtifactDir, shards: list[int]) -> Seen:
    """The keys the complete shards met, accepted or rejected: a resume's repeated-key check."""
    seen = Seen()
    for shard in shards:
        for name in (f"{SHARDS_DIR}/{shard:05d}.parquet", f"{REJECTED_PARTS}/{shard:05d}.parquet"):
            with artifact.open(name) as handle:
                table = pq.read_table(handle)
            if "source_key" in table.column_names:
                for key in table["source_key"].to_pylist():
                    seen.add(key)
    return seen


def unknown_members(sample: TarSample) -> list[str]:
    return sorted(ext for ext in sample.members if ext not in KNOWN_EXTENSIONS)
