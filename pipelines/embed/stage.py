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

import time

from ops.manifest import StageCounts, merge_shard_stats
from ops.progress import ShardProgress
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import list_shards, shard_id_of
from pipelines.embed.config import EmbedConfig, embed_inputs
from pipelines.embed.embedder import ShardEmbedder


def embed_shards(
    config: EmbedConfig,
    shards_uri: str,
    encoder_uri: str,
    ctx: StageContext,
    recaption_uri: str | None = None,
) -> StageOutcome:
    """Embed every shard that has no completion marker yet; then summarise from all markers."""
    import ray

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
        progress = ShardProgress("embed", len(pending), "captions")
        for row in results.iter_rows():
            captions_now += int(row["num_captions"])
            progress.shard_done(str(row["shard"]), int(row["num_captions"]))
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
