"""Vision training stage (LLM2CLIP step 2): a CLIP vision tower learns to meet the frozen LLM's caption
features, read from the embed stage's sidecars, through a small adapter. The LLM is never loaded.

Output layout:
  train/          Ray Train's storage: checkpoints (weights, optimizer, schedule, data positions, RNG)
  export/         LLM2CLIPModel folder (safetensors + config + preprocessor_config.json):
                  LLM2CLIPModel.from_pretrained(...).get_image_features / get_text_features
  vision_tower/   the vision tower alone, a standard HF vision-model folder
  eval.json       retrieval on the held-out samples with the final weights
  rejected/       samples not trained on, with their reason: no_caption_features.parquet (embed rejected
                  every caption of the sample) and undecodable_image.parquet (met in training or in the
                  held-out set; an image training never reaches is not found)
"""

from __future__ import annotations

import time

import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.embedding_sidecar import check_sidecar_schema
from ops.errors import BadInputError
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import list_shards, shard_id_of
from pipelines.train_vision.config import TrainVisionConfig, train_vision_inputs
from pipelines.train_vision.sample_plan import (
    NO_CAPTION_FEATURES,
    REJECTED_SCHEMA,
    UNDECODABLE_IMAGE,
    plan_samples,
)


def check_every_worker_has_a_batch(counts: dict[str, int], config: TrainVisionConfig) -> None:
    """Before any worker starts: each worker's share of the training samples (they are dealt in equal
    ranges) must hold one batch, or the error names the numbers and the fields to change."""
    total = sum(counts.values())
    share = total // config.num_workers
    if share < config.batch_size_per_worker:
        raise BadInputError(
            f"train_vision: {total} training samples in {len(counts)} shards give each of num_workers="
            f"{config.num_workers} workers {share}, fewer than batch_size_per_worker="
            f"{config.batch_size_per_worker}; lower train_vision.batch_size_per_worker or "
            "train_vision.num_workers, or train on more data"
        )


def check_adapter_fits(config: TrainVisionConfig, llm_dim: int) -> None:
    """Without an input projection the adapter's blocks run at the LLM's width (the official shape)."""
    if not config.adapter_input_projection and config.adapter_width != llm_dim:
        raise BadInputError(
            f"train_vision: adapter_input_projection is false, so adapter_width ({config.adapter_width}) "
            f"must equal the caption embeddings' width ({llm_dim}, from the embed stage's sidecars); set "
            f"train_vision.adapter_width: {llm_dim}, or turn the input projection on"
        )


def run_train_vision(config: TrainVisionConfig, ctx: StageContext) -> StageOutcome:
    vision_model = config.vision_model or ctx.inputs["tiny_models"].child_uri("vision")
    return train_on(
        config, ctx.inputs["download"].child_uri("shards"), ctx.inputs["embed"], vision_model, ctx
    )


def train_on(
    config: TrainVisionConfig, shards_uri: str, embed: ArtifactDir, vision_model: str, ctx: StageContext
) -> StageOutcome:
    """Train on any shard folder and its embedding folder (sidecars/ and a manifest, as embed writes them)
    into ctx.artifact: what the stage and the train_vision CLI both run."""
    started = time.perf_counter()
    tar_paths = list_shards(shards_uri)
    sidecars = {shard_id_of(p): embed.child_uri(f"sidecars/{shard_id_of(p)}.parquet") for p in tar_paths}
    missing = [shard for shard, uri in sidecars.items() if not embed.exists(f"sidecars/{shard}.parquet")]
    if missing:
        raise FileNotFoundError(f"{embed.uri}/sidecars: no sidecar for shards {missing[:10]}; rerun embed")
    if not tar_paths:
        raise FileNotFoundError(f"{shards_uri}: no .tar shards")
    llm_dim = int(embed.read_manifest()["details"]["dim"])
    check_adapter_fits(config, llm_dim)
    for uri in sidecars.values():  # fail here, naming the file, not inside a training worker
        check_sidecar_schema(uri, llm_dim)
    with (
        ctx.artifact.local_dir("rejected") as folder,
        pq.ParquetWriter(f"{folder}/{NO_CAPTION_FEATURES}.parquet", REJECTED_SCHEMA) as rejected,
    ):
        samples = plan_samples(
            tar_paths,
            sidecars,
            config.train_split_value,
            config.eval_split_value,
            config.num_eval_samples,
            rejected,
        )
    held_out = sum(len(keys) for keys in samples.held_out.values())
    trained = sum(samples.training_counts.values())
    print(
        f"[train_vision] {samples.num_samples} samples: {trained} to train on, {held_out} held out in "
        f"{len(samples.held_out)} shards, {samples.no_caption} without caption features",
        flush=True,
    )
    check_every_worker_has_a_batch(samples.training_counts, config)
    # torch, transformers and timm load here, not when the workflow imports the registry (--help, --dry-run).
    from pipelines.train_vision.worker import UNDECODABLE_FILE, run_training

    result = run_training(config, vision_model, llm_dim, tar_paths, sidecars, samples, ctx)
    metrics = {**result, "stage_s": time.perf_counter() - started}
    with ctx.artifact.open(UNDECODABLE_FILE) as handle:
        undecodable = pq.read_metadata(handle).num_rows
    rejected_by_reason = {NO_CAPTION_FEATURES: samples.no_caption, UNDECODABLE_IMAGE: undecodable}
    rejected_by_reason = {reason: n for reason, n in rejected_by_reason.items() if n}
    num_rejected = sum(rejected_by_reason.values())
    counts = StageCounts(
        num_in=samples.num_samples,
        num_out=samples.num_samples - num_rejected,
        num_rejected=num_rejected,
        rejected_by_reason=rejected_by_reason,
    )
    metrics.update(num_train_samples=float(trained), num_held_out=float(held_out))
    details = {"vision_model": vision_model, "llm_dim": llm_dim, "export": ctx.artifact.child_uri("export")}
    return StageOutcome(counts=counts, metrics=metrics, details=details)


def _logit_scale_plan(config: TrainVisionConfig) -> str:
    from pipelines.train_vision.model import logit_scale_plan  # loads transformers: only a dry run needs it

    return logit_scale_plan(config)


STAGE = StageSpec(
    name="train_vision",
    # 2: training samples dealt to workers in equal ranges, not shards round-robin; 3: the export loads the
    # Hub way (auto_map + modeling file, a complete CLIPImageProcessor file), held-out resize as CLIP's;
    # 4: logit scale from the pretrained checkpoint and clamped in place, random resized crop with aspect,
    # samples without caption features never dealt, undecodable images replaced by spares, the held-out
    # set chosen by hash (num_eval_samples) and left out of training; 5: shuffled in blocks of
    # shuffle_buffer samples (a resume seeks to its block), batches travel as uint8
    code_version="5",
    config_cls=TrainVisionConfig,
    inputs=("download", "embed", "tiny_models"),
    run=run_train_vision,
    description="CLIP vision tower + LLM2CLIP adapter on Ray Train against the precomputed LLM features",
    resumable=True,  # a rerun keeps train/ so Ray Train resumes from the last checkpoint
    resolve_inputs=train_vision_inputs,
    plan_notes=lambda config: [_logit_scale_plan(config)],
)
