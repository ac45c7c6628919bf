"""Vision training stage (LLM2CLIP step 2): a CLIP vision tower learns to meet the frozen LLM's caption
features, read from the embed stage's sidecars, through a small adapter. The LLM is never loaded.

Output layout:
  train/          Ray Train's storage: checkpoints (weights, optimizer, schedule, data positions, RNG)
  export/         LLM2CLIPModel folder (safetensors + config + preprocessor_config.json):
                  LLM2CLIPModel.from_pretrained(...).get_image_features / get_text_features
  vision_tower/   the vision tower alone, a standard HF vision-model folder
  eval.json       retrieval on the held-out split with the final weights
"""

from __future__ import annotations

import time

from ops.embedding_sidecar import check_sidecar_schema
from ops.errors import BadInputError
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import list_shards, shard_id_of
from pipelines.train_vision.config import TrainVisionConfig, train_vision_inputs
from pipelines.train_vision.data import training_sample_counts
from pipelines.train_vision.model import logit_scale_plan
from pipelines.train_vision.worker import run_training


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
    started = time.perf_counter()
    vision_model = config.vision_model or ctx.inputs["tiny_models"].child_uri("vision")
    shards_uri = ctx.inputs["download"].child_uri("shards")
    embed = ctx.inputs["embed"]
    tar_paths = list_shards(shards_uri)
    sidecars = {shard_id_of(p): embed.child_uri(f"sidecars/{shard_id_of(p)}.parquet") for p in tar_paths}
    missing = [shard for shard, uri in sidecars.items() if not embed.exists(f"sidecars/{shard}.parquet")]
    if missing:
        raise FileNotFoundError(f"{embed.uri}/sidecars: no sidecar for shards {missing[:10]}; rerun embed")
    llm_dim = int(embed.read_manifest()["details"]["dim"])
    check_adapter_fits(config, llm_dim)
    for uri in sidecars.values():  # fail here, naming the file, not inside a training worker
        check_sidecar_schema(uri, llm_dim)
    counts = training_sample_counts(tar_paths, config.train_split_value)
    check_every_worker_has_a_batch(counts, config)
    result = run_training(config, vision_model, llm_dim, tar_paths, sidecars, counts, ctx)
    metrics = {**result, "stage_s": time.perf_counter() - started}
    total = int(embed.read_manifest()["counts"]["num_in"])
    counts = StageCounts(num_in=total, num_out=total, num_rejected=0)
    details = {"vision_model": vision_model, "llm_dim": llm_dim, "export": ctx.artifact.child_uri("export")}
    return StageOutcome(counts=counts, metrics=metrics, details=details)


STAGE = StageSpec(
    name="train_vision",
    # 2: training samples dealt to workers in equal ranges, not shards round-robin; 3: the export loads the
    # Hub way (auto_map + modeling file, a complete CLIPImageProcessor file), held-out resize as CLIP's
    code_version="3",
    config_cls=TrainVisionConfig,
    inputs=("download", "embed", "tiny_models"),
    run=run_train_vision,
    description="CLIP vision tower + LLM2CLIP adapter on Ray Train against the precomputed LLM features",
    resumable=True,  # a rerun keeps train/ so Ray Train resumes from the last checkpoint
    resolve_inputs=train_vision_inputs,
    plan_notes=lambda config: [logit_scale_plan(config)],
)
