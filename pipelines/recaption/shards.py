"""The recaption stage's shard files: the rows read from each tar (with duplicate keys as rejected rows), the
accept/reject decision per caption, and captions/ + rejected/ + the completion marker per shard."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pyarrow as pa

from ops.artifact_dir import ArtifactDir
from ops.caption_quality import rejection_reason
from ops.manifest import count_reasons
from ops.webdataset_io import count_samples, iter_samples, shard_id_of
from pipelines.recaption.config import RecaptionConfig

CAPTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("original_caption", pa.string()),
        ("model", pa.string()),
        ("prompt_id", pa.string()),
        ("num_prompt_tokens", pa.int32()),
        ("num_generated_tokens", pa.int32()),
        ("time_s", pa.float32()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [("key", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("generated_text", pa.string())]
)


def expected_counts(shards_uri: str, tar_paths: list[str]) -> dict[str, int]:
    """Samples per shard: img2dataset's stats when present (cheap), else the tar's headers."""
    fs, _ = fsspec.core.url_to_fs(shards_uri)
    counts = {}
    for tar_path in tar_paths:
        stats_path = tar_path.removesuffix(".tar") + "_stats.json"
        if fs.exists(stats_path):
            with fs.open(stats_path, "rb") as handle:
                counts[shard_id_of(tar_path)] = int(json.loads(handle.read())["successes"])
        else:
            counts[shard_id_of(tar_path)] = count_samples(fs, tar_path)
    return counts


class ShardRows:
    """flat_map: a shard path -> its samples as rows (image bytes, original caption)."""

    def __init__(self, shards_uri: str):
        self.shards_uri = shards_uri

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        fs, _ = fsspec.core.url_to_fs(self.shards_uri)
        shard = shard_id_of(row["tar_path"])
        duplicates: list[str] = []
        rows = [
            {
                "shard": shard,
                "key": sample["key"],
                "jpg": sample.get("jpg", b""),
                "original_caption": sample.get("txt", b"").decode("utf-8", "replace"),
                "input_error": "",
            }
            for sample in iter_samples(fs, row["tar_path"], duplicates)
            if "jpg" in sample or "json" in sample
        ]
        # A repeated key is rejected, not captioned twice: downstream joins are one row per key.
        return rows + [
            {
                "shard": shard,
                "key": key,
                "jpg": b"",
                "original_caption": "",
                "input_error": f"duplicate_key: {key!r} appears more than once in {row['tar_path']}",
            }
            for key in duplicates
        ]


def classify(row: dict[str, Any], config: RecaptionConfig) -> tuple[str | None, str]:
    if row.get("decode_error"):  # "<reason>: <detail>" from the shard reader or the image decoder
        reason, _, detail = row["decode_error"].partition(": ")
        return reason, detail
    if row.get("__inference_error__"):
        return "engine_error", row["__inference_error__"]
    reason = rejection_reason(row.get("generated_text", ""), config.quality)
    return reason, ""


def write_shard(
    artifact: ArtifactDir, shard: str, rows: list[dict], config: RecaptionConfig, model: str
) -> dict[str, Any]:
    accepted, rejected = [], []
    for row in sorted(rows, key=lambda r: r["key"]):
        reason, detail = classify(row, config)
        if reason is None:
            accepted.append(
                {
                    "key": row["key"],
                    "caption": row["generated_text"].strip(),
                    "original_caption": row["original_caption"],
                    "model": model,
                    "prompt_id": config.prompt_id,
                    "num_prompt_tokens": row["num_input_tokens"],
                    "num_generated_tokens": row["num_generated_tokens"],
                    "time_s": row["time_taken_llm"],
                }
            )
        else:
            rejected.append(
                {
                    "key": row["key"],
                    "reason": reason,
                    "detail": detail,
                    "generated_text": row["generated_text"],
                }
            )
    for folder, table in (
        ("captions", pa.Table.from_pylist(accepted, schema=CAPTION_SCHEMA)),
        ("rejected", pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA)),
    ):
        artifact.write_parquet_atomic(f"{folder}/{shard}.parquet", table)
    stats = {
        "num_in": len(rows),
        "num_out": len(accepted),
        "num_rejected": len(rejected),
        "rejected_by_reason": count_reasons(row["reason"] for row in rejected),
        "generated_tokens": sum(r["num_generated_tokens"] for r in rows),
        "caption_words": sum(len(r["caption"].split()) for r in accepted),
    }
    artifact.mark_shard_done(shard, stats)
    return stats
