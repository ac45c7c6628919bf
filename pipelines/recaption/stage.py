"""Recaption stage: dense captions for every image of the webdataset shards, by a VLM in vLLM via Ray Data.

Output layout:
  captions/{shard}.parquet   key, caption (dense), original_caption, model, prompt_id, token counts, time
  rejected/{shard}.parquet   key, reason (undecodable_image, empty_image, too_many_pixels, duplicate_key,
                             engine_error, empty_caption, too_short, repetition_loop), detail,
                             generated_text
  _shards/{shard}.json       completion marker with the shard's counts
  samples.html               thumbnails with their captions (also logged to MLflow)
"""

from __future__ import annotations

import time
from collections import defaultdict

import ray

from models.captioner_prompts import render_prompt
from ops.artifact_dir import ArtifactDir
from ops.manifest import StageCounts, merge_shard_stats
from ops.model_files import local_model
from ops.progress import ShardProgress
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import list_shards, shard_id_of
from pipelines.recaption.config import RecaptionConfig, recaption_inputs
from pipelines.recaption.processor import build_caption_processor
from pipelines.recaption.report import samples_html
from pipelines.recaption.shards import (
    ShardRows,
    expected_counts,
    write_shard,
)


def recaption_shards(config: RecaptionConfig, shards_uri: str, model: str, ctx: StageContext) -> StageOutcome:
    """Caption every pending shard in one streaming Ray Data pipeline; markers are written as shards fill."""
    started = time.perf_counter()
    artifact = ctx.artifact
    tar_paths = list_shards(shards_uri)
    if not tar_paths:
        raise FileNotFoundError(f"{shards_uri}: no .tar shards to recaption")
    expected = expected_counts(shards_uri, tar_paths)
    pending = [p for p in tar_paths if not artifact.shard_done(shard_id_of(p))]
    if len(pending) < len(tar_paths):
        done = len(tar_paths) - len(pending)
        print(f"[recaption] resuming: {done} of {len(tar_paths)} shards already complete", flush=True)
    generated_now, images_now = 0, 0
    if pending:
        from transformers import AutoProcessor

        with local_model(model) as source:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=config.trust_remote_code)
        prompt = render_prompt(processor, config.prompt_id)
        rows = ray.data.from_items([{"tar_path": p} for p in pending]).flat_map(ShardRows(shards_uri))
        captioned = build_caption_processor(config, model, prompt)(rows)
        buffers: dict[str, list[dict]] = defaultdict(list)
        total = sum(expected[shard_id_of(p)] for p in pending)
        progress = ShardProgress("recaption", len(pending), "images", total_rows=total)
        for row in captioned.iter_rows():
            shard = row["shard"]
            buffers[shard].append(row)
            if len(buffers[shard]) == expected[shard]:
                stats = write_shard(artifact, shard, buffers.pop(shard), config, model)
                generated_now += stats["generated_tokens"]
                images_now += stats["num_in"]
                progress.shard_done(shard, stats["num_in"])
                ctx.log_metrics({"shard_acceptance": stats["num_out"] / max(stats["num_in"], 1)}, int(shard))
        if buffers:
            got = {shard: len(rows) for shard, rows in buffers.items()}
            raise RuntimeError(
                f"recaption: shards ended incomplete (rows got vs expected): {got} vs {expected}"
            )
    elapsed = time.perf_counter() - started
    return summarize(artifact, shards_uri, tar_paths, config, images_now, generated_now, elapsed, ctx)


def summarize(
    artifact: ArtifactDir,
    shards_uri: str,
    tar_paths: list[str],
    config: RecaptionConfig,
    images_now: int,
    generated_now: int,
    elapsed_s: float,
    ctx: StageContext,
) -> StageOutcome:
    stats = {s["shard"]: s for s in artifact.shard_stats()}
    missing = [shard_id_of(p) for p in tar_paths if shard_id_of(p) not in stats]
    if missing:
        raise RuntimeError(f"recaption: shards {missing[:10]} have no completion marker")
    totals, by_reason = merge_shard_stats(stats.values(), ("num_in", "num_out", "caption_words"))
    num_in, num_out = int(totals["num_in"]), int(totals["num_out"])
    metrics = {
        "images_per_s": images_now / max(elapsed_s, 1e-9),
        "generated_tokens_per_s": generated_now / max(elapsed_s, 1e-9),
        "mean_caption_words": totals["caption_words"] / max(num_out, 1),
        "acceptance_rate": num_out / max(num_in, 1),
        "num_shards": float(len(tar_paths)),
        **{f"rejected_{reason}": float(n) for reason, n in by_reason.items()},
    }
    html = samples_html(artifact, shards_uri, config.num_sample_previews)
    artifact.write_bytes_atomic("samples.html", html.encode("utf-8"))
    ctx.log_text(html, "samples.html")
    counts = StageCounts(
        num_in=num_in, num_out=num_out, num_rejected=num_in - num_out, rejected_by_reason=by_reason
    )
    return StageOutcome(counts=counts, metrics=metrics)


def adopt_captions(config: RecaptionConfig, shards_uri: str, ctx: StageContext) -> StageOutcome:
    """recaption.from: the caption folder's files for every shard, checked against the shard (its keys
    are the shard's), copied into this stage's artifact; then summarised as a run would be."""
    import pyarrow.parquet as pq

    from ops.webdataset_io import status_table_of

    started = time.perf_counter()
    source = ArtifactDir(config.from_)
    tar_paths = list_shards(shards_uri)
    missing = [shard_id_of(p) for p in tar_paths if not source.shard_done(shard_id_of(p))]
    if missing:
        raise FileNotFoundError(
            f"recaption.from: {config.from_} has no finished captions for shards {missing[:10]} of "
            f"{shards_uri}; recaption them with workflows/cli/recaption.py into that folder first"
        )
    for tar_path in tar_paths:
        shard = shard_id_of(tar_path)
        with source.open(f"captions/{shard}.parquet") as handle:
            captions = pq.read_table(handle)
        fs, status_path = status_table_of(tar_path)
        with fs.open(status_path, "rb") as handle:
            keys = set(pq.read_table(handle, columns=["key"])["key"].to_pylist())
        strangers = [k for k in captions["key"].to_pylist() if k not in keys]
        if strangers:
            raise ValueError(
                f"recaption.from: {config.from_}/captions/{shard}.parquet has key {strangers[0]!r}, which "
                f"{tar_path} does not: the captions were made for other shards"
            )
        for name in (f"captions/{shard}.parquet", f"rejected/{shard}.parquet"):
            if source.exists(name):
                with source.open(name) as handle:
                    ctx.artifact.write_bytes_atomic(name, handle.read())
        stats = source.read_json(f"_shards/{shard}.json")
        ctx.artifact.mark_shard_done(shard, {k: v for k, v in stats.items() if k != "shard"})
    elapsed = time.perf_counter() - started
    return summarize(ctx.artifact, shards_uri, tar_paths, config, 0, 0, elapsed, ctx)


def run_recaption(config: RecaptionConfig, ctx: StageContext) -> StageOutcome:
    if config.from_:
        return adopt_captions(config, ctx.inputs["download"].child_uri("shards"), ctx)
    model = config.model or ctx.inputs["tiny_models"].child_uri("captioner")
    return recaption_shards(config, ctx.inputs["download"].child_uri("shards"), model, ctx)


STAGE = StageSpec(
    name="recaption",
    code_version="1",
    config_cls=RecaptionConfig,
    inputs=("download", "tiny_models"),
    run=run_recaption,
    description="dense captions from a vision-language model in vLLM, through ray.data.llm",
    resumable=True,
    resolve_inputs=recaption_inputs,
)
