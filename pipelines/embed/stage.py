"""Embed stage: every caption of every image shard through the frozen fine-tuned text encoder, once.

Ray Data runs one model actor per replica (`map_batches` over shard paths, one shard per call), so each
actor reads a shard's captions, sorts them by token length (less padding), embeds them in batches and
writes the shard's sidecar itself: no embedding passes through the driver.

Output layout:
  sidecars/{shard}.parquet   key (tar order, 1:1 with the image shard), {field} vectors, {field}_truncated
  rejected/{shard}.parquet   key, reason (missing_<field>[_and_<field>]), detail: samples lacking a
                             caption field (their sidecar row is kept: zeros, {field}_present false),
                             and duplicate_key: a key repeated in the shard (no sidecar row)
  reference/{shard}_text_embeddings.tar   with export_reference_layout: the reference LLM2CLIP layout
  _shards/{shard}.json       completion marker with the shard's counts
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.captioned_shards import caption_of
from ops.config_schema import check, check_model_reference
from ops.embedding_sidecar import reference_tar, sidecar_table
from ops.length_buckets import length_sorted_batches, padded_token_count
from ops.manifest import StageCounts, count_reasons, merge_shard_stats
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import iter_samples, list_shards, shard_id_of

REJECTED_SCHEMA = pa.schema([("key", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    encoder: str = ""  # a text-encoder folder (path or URI); "" = the finetune_text stage's encoder
    # Caption fields to embed: "original" is the sample's txt, "dense" comes from dense_caption_source,
    # any other name is a field of the sample's json.
    caption_fields: tuple[str, ...] = ("original", "dense")
    dense_caption_source: str = "column"  # column | recaption
    dense_caption_column: str = "dense_caption"
    dtype: str = "float16"  # sidecar storage: float16 | float32
    batch_size: int = 128  # captions per encoder forward
    length_bucketing: bool = True  # sort a shard's captions by token length before batching
    num_actors: int = 1  # encoder replicas (Ray Data actors)
    use_gpu: bool = False
    num_cpus_per_actor: float = 1.0
    bf16: bool = True  # autocast on GPU
    export_reference_layout: bool = False  # also write reference/{shard}_text_embeddings.tar
    # Member names in the reference layout (its loader reads "shortsv_captions" and "longsv_captions").
    reference_field_names: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"original": "shortsv_captions", "dense": "longsv_captions"}
    )
    trust_remote_code: bool = False

    def __post_init__(self):
        check_model_reference(self.encoder, "encoder")
        check(len(self.caption_fields) > 0, "caption_fields", "at least one field", self.caption_fields)
        check(
            len(set(self.caption_fields)) == len(self.caption_fields),
            "caption_fields",
            "distinct names",
            self.caption_fields,
        )
        check(
            self.dense_caption_source in ("column", "recaption"),
            "dense_caption_source",
            "column or recaption",
            self.dense_caption_source,
        )
        check(self.dtype in ("float16", "float32"), "dtype", "float16 or float32", self.dtype)
        check(self.batch_size > 0, "batch_size", "a positive count", self.batch_size)
        check(self.num_actors > 0, "num_actors", "a positive count", self.num_actors)
        check(self.num_cpus_per_actor > 0, "num_cpus_per_actor", "a positive number", self.num_cpus_per_actor)
        if self.export_reference_layout:
            unnamed = [f for f in self.caption_fields if f not in self.reference_field_names]
            check(
                not unnamed,
                "reference_field_names",
                f"a name for every caption field (missing {unnamed})",
                "",
            )


def embed_inputs(config: EmbedConfig) -> tuple[str, ...]:
    needed = ["download"]
    if "dense" in config.caption_fields and config.dense_caption_source == "recaption":
        needed.append("recaption")
    if not config.encoder:
        needed.append("finetune_text")
    return tuple(needed)


def shard_captions(
    fs, tar_path: str, config: EmbedConfig, recaptions: dict[str, str] | None, duplicates: list[str]
) -> tuple[list[str], dict[str, list[str | None]]]:
    """(keys in tar order, {field: caption or None}) of the samples that have an image; repeated keys
    are appended to `duplicates` instead."""
    keys: list[str] = []
    fields: dict[str, list[str | None]] = {f: [] for f in config.caption_fields}
    for sample in iter_samples(fs, tar_path, duplicates):
        if "jpg" not in sample:
            continue
        keys.append(sample["key"])
        for field in config.caption_fields:
            if field == "dense" and config.dense_caption_source == "recaption":
                text = (recaptions or {}).get(sample["key"])
                fields[field].append(text if isinstance(text, str) and text.strip() else None)
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

        from models.text_encoder_io import load_text_encoder

        self.config = config
        self.artifact = ArtifactDir(artifact_uri)
        self.shards_uri = shards_uri
        self.recaption = ArtifactDir(recaption_uri) if recaption_uri else None
        self.device = torch.device("cuda" if config.use_gpu else "cpu")
        with ArtifactDir(encoder_uri).local_copy("") as folder:
            encoder, self.tokenizer = load_text_encoder(folder, trust_remote_code=config.trust_remote_code)
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
        import fsspec

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
        texts = [config.instruction + text for _, _, text in jobs]
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


def embed_shards(
    config: EmbedConfig,
    shards_uri: str,
    encoder_uri: str,
    ctx: StageContext,
    recaption_uri: str | None = None,
) -> StageOutcome:
    """Embed every shard that has no completion marker yet; then summarise from all markers."""
    import ray
    from tqdm.auto import tqdm

    started = time.perf_counter()
    tar_paths = list_shards(shards_uri)
    if not tar_paths:
        raise FileNotFoundError(f"{shards_uri}: no .tar shards to embed")
    pending = [p for p in tar_paths if not ctx.artifact.shard_done(shard_id_of(p))]
    if len(pending) < len(tar_paths):
        print(
            f"[embed] resuming: {len(tar_paths) - len(pending)} of {len(tar_paths)} shards already complete"
        )
    captions_now = 0
    if pending:
        shards = ray.data.from_items([{"tar_path": p} for p in pending], override_num_blocks=len(pending))
        results = shards.map_batches(
            ShardEmbedder,
            fn_constructor_args=(encoder_uri, config, ctx.artifact.uri, shards_uri, recaption_uri),
            batch_size=1,
            concurrency=config.num_actors,
            num_cpus=config.num_cpus_per_actor,
            num_gpus=1 if config.use_gpu else 0,
        )
        with tqdm(total=len(pending), desc="embed", unit="shard") as bar:
            for row in results.iter_rows():
                captions_now += int(row["num_captions"])
                bar.update(1)
                ctx.log_metrics(
                    {"shard_captions_per_s": row["num_captions"] / max(row["seconds"], 1e-9)},
                    int(row["shard"]),
                )
    elapsed = time.perf_counter() - started
    return summarize(ctx, tar_paths, encoder_uri, config, captions_now, elapsed)


def summarize(
    ctx: StageContext,
    tar_paths: list[str],
    encoder_uri: str,
    config: EmbedConfig,
    captions_now: int,
    elapsed_s: float,
) -> StageOutcome:
    stats = {s["shard"]: s for s in ctx.artifact.shard_stats()}
    missing = [shard_id_of(p) for p in tar_paths if shard_id_of(p) not in stats]
    if missing:
        raise RuntimeError(f"embed: shards {missing[:10]} have no completion marker")
    totals, by_reason = merge_shard_stats(
        stats.values(),
        (
            "num_in",
            "num_out",
            "num_rejected",
            "num_captions",
            "num_truncated",
            "num_padded_tokens",
            "num_batch_tokens",
        ),
    )
    dims = {s["dim"] for s in stats.values()}
    if len(dims) != 1:
        raise RuntimeError(f"embed: shards disagree on the embedding dimension: {sorted(dims)}")
    metrics = {
        "captions_per_s": captions_now / max(elapsed_s, 1e-9),
        "num_captions": totals["num_captions"],
        "num_truncated": totals["num_truncated"],
        "padding_share": totals["num_padded_tokens"] / max(totals["num_batch_tokens"], 1.0),
        "num_shards": float(len(tar_paths)),
    }
    counts = StageCounts(
        num_in=int(totals["num_in"]),
        num_out=int(totals["num_out"]),
        num_rejected=int(totals["num_rejected"]),
        rejected_by_reason=by_reason,
    )
    details = {
        "dim": dims.pop(),
        "dtype": config.dtype,
        "caption_fields": list(config.caption_fields),
        "encoder": encoder_uri,
    }
    return StageOutcome(counts=counts, metrics=metrics, details=details)


def run_embed(config: EmbedConfig, ctx: StageContext) -> StageOutcome:
    encoder_uri = config.encoder or ctx.inputs["finetune_text"].child_uri("encoder")
    recaption = ctx.inputs.get("recaption")
    return embed_shards(
        config,
        ctx.inputs["download"].child_uri("shards"),
        encoder_uri,
        ctx,
        recaption_uri=recaption.uri if recaption is not None else None,
    )


STAGE = StageSpec(
    name="embed",
    code_version="1",
    config_cls=EmbedConfig,
    inputs=("download", "recaption", "finetune_text"),
    run=run_embed,
    description="caption embeddings of the frozen text encoder, per shard, through Ray Data model actors",
    resumable=True,
    resolve_inputs=embed_inputs,
)
