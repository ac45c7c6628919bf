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

import dataclasses
import time
from typing import Literal

from ops.config_schema import check, check_model_reference
from ops.embedding_sidecar import check_sidecar_schema
from ops.errors import BadInputError
from ops.hashing import NOT_IN_KEY
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import list_shards, shard_id_of
from pipelines.train_vision.data import training_sample_counts


@dataclasses.dataclass(frozen=True)
class TrainVisionConfig:
    # HF id or local path of a CLIPVisionModel / SiglipVisionModel, or "timm:<name>" for a timm tower
    # (e.g. timm:eva02_large_patch14_clip_336.merged2b; needs the GPU profile); "" = the demo's tiny tower
    vision_model: str = ""
    adapter_width: int = 1024  # LLM2CLIP's adapter: residual MLP blocks on the LLM features
    adapter_depth: int = 4
    adapter_dropout: float = 0.0
    projection_dim: int = 1280  # the shared image-text space
    dense_ratio: float = 0.5  # share of samples trained on the dense caption (LLM2CLIP: 50/50)
    train_split_value: str = "train"  # samples whose json `split` differs are left out of training
    eval_split_value: str = "eval"  # the held-out samples of the periodic and final evaluation
    eval_max_samples: int = 1024  # at most this many held-out samples are evaluated
    eval_every_steps: int = 0  # 0 = only at the end
    batch_size_per_worker: int = 64  # images; the loss sees num_workers x this many pairs
    max_steps: int = 1000
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    layer_decay: float = 1.0  # layer-wise lr decay over the vision tower; 1.0 = off
    logit_scale_init: float = 2.6592  # ln(1 / 0.07), CLIP's
    train_crop_scale: tuple[float, float] = (0.9, 1.0)  # random-resized-crop area range
    shuffle_buffer: int = 1000  # samples
    num_workers: int = 2
    use_gpu: bool = False
    bf16: bool = True  # autocast on GPU
    gradient_checkpointing: bool = False
    checkpoint_every_steps: int = 200
    max_failures: int = 1
    # Where Ray places the workers (Ray Train's ScalingConfig.placement_strategy): PACK fills a node first,
    # SPREAD puts them on different nodes. Not part of the key: it changes no result.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = dataclasses.field(
        default="PACK", metadata=NOT_IN_KEY
    )
    seed: int = 0

    def __post_init__(self):
        check_model_reference(self.vision_model, "vision_model")
        for name in (
            "adapter_width",
            "adapter_depth",
            "projection_dim",
            "batch_size_per_worker",
            "max_steps",
            "num_workers",
            "checkpoint_every_steps",
            "shuffle_buffer",
            "eval_max_samples",
        ):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(0 <= self.dense_ratio <= 1, "dense_ratio", "in [0, 1]", self.dense_ratio)
        check(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)
        check(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        check(
            self.eval_every_steps >= 0,
            "eval_every_steps",
            "zero (off) or a step count",
            self.eval_every_steps,
        )
        low, high = self.train_crop_scale
        check(0 < low <= high <= 1, "train_crop_scale", "0 < low <= high <= 1", self.train_crop_scale)
        check(self.max_failures >= 0, "max_failures", "zero or more", self.max_failures)


def train_vision_inputs(config: TrainVisionConfig) -> tuple[str, ...]:
    return ("download", "embed") if config.vision_model else ("download", "embed", "tiny_models")


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


def run_train_vision(config: TrainVisionConfig, ctx: StageContext) -> StageOutcome:
    from pipelines.train_vision.worker import run_training

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
    code_version="2",  # 2: training samples dealt to workers in equal ranges, not shards round-robin
    config_cls=TrainVisionConfig,
    inputs=("download", "embed", "tiny_models"),
    run=run_train_vision,
    description="CLIP vision tower + LLM2CLIP adapter on Ray Train against the precomputed LLM features",
    sharded=True,  # a rerun keeps train/ so Ray Train resumes from the last checkpoint
    resolve_inputs=train_vision_inputs,
)
