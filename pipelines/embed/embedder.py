"""One shard's embeddings: its captions by field, and the Ray Data actor that encodes them with the
frozen text encoder and writes the shard's sidecar, rejected rows and completion marker."""

from __future__ import annotations

import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.captioned_shards import ORIGINAL, caption_of
from ops.embedding_sidecar import reference_tar, sidecar_table
from ops.length_buckets import length_sorted_batches, padded_token_count
from ops.manifest import count_reasons
from ops.webdataset_io import iter_samples, shard_id_of, status_table_of
from pipelines.embed.config import EmbedConfig

REJECTED_SCHEMA = pa.schema([("key", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


def _caption_or_none(text) -> str | None:
    return text if isinstance(text, str) and text.strip() else None


def status_table_captions(
    fs, tar_path: str, config: EmbedConfig, recaptions: dict[str, str] | None
) -> tuple[list[str], dict[str, list[str | None]]] | None:
    """shard_captions from img2dataset's status table beside the tar (`<shard>.parquet`: one row per url,
    the samples being its rows with status "success", in the tar's order, as img2dataset's writer and the
    download stage's both write them side by side), without reading a byte of the tar: at CC3M+CC12M the
    tars are a terabyte of JPEGs, read for text. None when the table is absent or lacks a column a field
    needs (then the tar is read)."""
    _, path = status_table_of(tar_path)
    if not fs.exists(path):
        return None
    columns = {field: _status_column(field, config) for field in config.caption_fields}
    with fs.open(path, "rb") as handle:
        names = pq.read_schema(handle).names
        needed = {"key", "status", *(c for c in columns.values() if c is not None)}
        if not needed.issubset(names):
            return None
        table = pq.read_table(handle, columns=sorted(needed))
    table = table.filter(pc.equal(table["status"], "success"))  # in the tar's order: written side by side
    keys = table["key"].to_pylist()
    fields: dict[str, list[str | None]] = {}
    for field, column in columns.items():
        if column is None:  # the recaption stage's dense captions, by key
            fields[field] = [_caption_or_none((recaptions or {}).get(key)) for key in keys]
        else:
            fields[field] = [_caption_or_none(text) for text in table[column].to_pylist()]
    return keys, fields


def _status_column(field: str, config: EmbedConfig) -> str | None:
    """The status table's column that holds a caption field (None: it comes from recaption)."""
    if field == "dense":
        return None if config.dense_caption_source == "recaption" else config.dense_caption_column
    return "caption" if field == ORIGINAL else field


def shard_captions(
    fs, tar_path: str, config: EmbedConfig, recaptions: dict[str, str] | None, duplicates: list[str]
) -> tuple[list[str], dict[str, list[str | None]]]:
    """(keys in tar order, {field: caption or None}) of the samples that have an image; repeated keys
    are appended to `duplicates` instead. From the status table when the shard has one
    (status_table_captions), else from the tar."""
    from_table = status_table_captions(fs, tar_path, config, recaptions)
    if from_table is not None:
        return from_table
    keys: list[str] = []
    fields: dict[str, list[str | None]] = {f: [] for f in config.caption_fields}
    for sample in iter_samples(fs, tar_path, duplicates):
        if "jpg" not in sample:
            continue
        keys.append(sample["key"])
        for field in config.caption_fields:
            if field == "dense" and config.dense_caption_source == "recaption":
                fields[field].append(_caption_or_none((recaptions or {}).get(sample["key"])))
            else:
                fields[field].append(
                    caption_of(sample, config.dense_caption_column if field == "dense" else field)
                )
    return keys, fields


class ShardEmbedder:
    """Ray Data actor: loads the encoder once, then embeds whole shards and writes their sidecars."""

    def __init__(
        self, encoder_uri: str, config: EmbedConfig, artifact_uri: str, shards_uri: str, recaption_uri
    ):
        import torch

        from models.text_encoder_io import open_text_encoder

        self.config = config
        self.artifact = ArtifactDir(artifact_uri)
        self.shards_uri = shards_uri
        self.recaption = ArtifactDir(recaption_uri) if recaption_uri else None
        self.device = torch.device("cuda" if config.use_gpu else "cpu")
        encoder, self.tokenizer = open_text_encoder(
            encoder_uri, config.encoder_preset, trust_remote_code=config.trust_remote_code
        )
        self.encoder = encoder.to(self.device).eval()
        self.autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        stats = [self.embed_shard(str(path)) for path in batch["tar_path"]]
        return {name: [s[name] for s in stats] for name in stats[0]}

    def _recaptions(self, shard: str) -> dict[str, str] | None:
        if self.recaption is None:
            return None
        table = pq.read_table(self.recaption.open(f"captions/{shard}.parquet"), columns=["key", "caption"])
        return dict(zip(table["key"].to_pylist(), table["caption"].to_pylist()))

    def embed_shard(self, tar_path: str) -> dict[str, Any]:
        started = time.perf_counter()
        shard = shard_id_of(tar_path)
        fs, _ = fsspec.core.url_to_fs(self.shards_uri)
        duplicates: list[str] = []
        keys, fields = shard_captions(fs, tar_path, self.config, self._recaptions(shard), duplicates)
        embedded, truncated, stats = self.embed_fields(fields)
        table = sidecar_table(keys, embedded, truncated, self.encoder_dim, self.config.dtype)
        self.artifact.write_parquet_atomic(f"sidecars/{shard}.parquet", table)
        rejected = []
        for row, key in enumerate(keys):
            absent = [field for field, texts in fields.items() if texts[row] is None]
            if absent:
                reason = "missing_" + "_and_".join(absent)
                rejected.append({"key": key, "reason": reason, "detail": f"no {', '.join(absent)} caption"})
        # A repeated key gets no sidecar row (rows are 1:1 with the shard's keys); it is counted here.
        rejected += [
            {"key": key, "reason": "duplicate_key", "detail": f"repeated in {tar_path}; the first is kept"}
            for key in duplicates
        ]
        self.artifact.write_parquet_atomic(
            f"rejected/{shard}.parquet", pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA)
        )
        if self.config.export_reference_layout:
            names = {f: self.config.reference_field_names[f] for f in self.config.caption_fields}
            self.artifact.write_bytes_atomic(
                f"reference/{shard}_text_embeddings.tar", reference_tar(table, names)
            )
        marker = {
            "num_in": len(keys) + len(duplicates),
            "num_out": len(keys) + len(duplicates) - len(rejected),
            "num_rejected": len(rejected),
            "rejected_by_reason": count_reasons(row["reason"] for row in rejected),
            "dim": self.encoder_dim,
            "seconds": time.perf_counter() - started,
            **stats,
        }
        self.artifact.mark_shard_done(shard, marker)
        return {"shard": shard, **{k: v for k, v in marker.items() if k != "rejected_by_reason"}}

    @property
    def encoder_dim(self) -> int:
        return int(self.encoder.backbone.config.hidden_size)

    def embed_fields(self, fields: dict[str, list[str | None]]):
        """All fields' present captions in one length-sorted pass; vectors back in sample order."""
        import torch

        from models.text_encoder import build_text_inputs

        config = self.encoder.config
        jobs = [
            (field, row, text) for field, texts in fields.items() for row, text in enumerate(texts) if text
        ]
        texts = [config.full_text(text) for _, _, text in jobs]
        full_lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False).input_ids]
        lengths = [min(n, config.max_length) for n in full_lengths]
        batches = length_sorted_batches(lengths, self.config.batch_size, self.config.length_bucketing)
        vectors: dict[str, list[np.ndarray | None]] = {f: [None] * len(t) for f, t in fields.items()}
        truncated = {f: [False] * len(t) for f, t in fields.items()}
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None),
        ):
            for batch in batches:
                inputs = build_text_inputs(self.tokenizer, [jobs[i][2] for i in batch], config)
                output = (
                    self.encoder(**{k: v.to(self.device) for k, v in inputs.items()}).float().cpu().numpy()
                )
                for slot, index in enumerate(batch):
                    field, row, _ = jobs[index]
                    vectors[field][row] = output[slot]
                    truncated[field][row] = full_lengths[index] > config.max_length
        padding, total = padded_token_count(lengths, batches)
        stats = {
            "num_captions": len(jobs),
            "num_truncated": sum(sum(t) for t in truncated.values()),
            "num_tokens": sum(lengths),
            "num_padded_tokens": padding,
            "num_batch_tokens": total,
        }
        return vectors, truncated, stats
