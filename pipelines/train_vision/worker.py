"""Ray Train side of train_vision: the per-worker function (model, loader, checkpoints with data
positions, rank-0 MLflow logging, the periodic evaluation, the export) and the trainer that runs it."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from ops.artifact_dir import ArtifactDir
from ops.config_schema import settings_from
from ops.progress import StepProgress
from ops.stage import StageContext
from pipelines.ray_train import RunLinks, fit_in_artifact, job_of, run_links
from pipelines.train_vision.config import TrainVisionConfig
from pipelines.train_vision.sample_plan import UNDECODABLE_IMAGE, SamplePlan

UNDECODABLE_FILE = "rejected/undecodable_image.parquet"

LOG_EVERY_STEPS = 5


@dataclasses.dataclass(frozen=True)
class VisionJob:
    """What every worker is handed: the stage config, the tower to start from and the training data."""

    config: TrainVisionConfig
    vision_model: str  # HF id, folder or "timm:<name>"
    llm_dim: int  # width of the caption features in the sidecars
    tar_paths: list[str]
    sidecars: dict[str, str]  # shard id -> its embedding sidecar
    samples: SamplePlan  # training samples per shard (deals them to workers) and the held-out keys
    links: RunLinks


def train_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; torch.distributed is up when it starts."""
    import torch.distributed as dist

    from models.llm2clip_export import save_export
    from pipelines.ray_train import Rank0Metrics, report_with_checkpoint, restored_state, worker_context
    from pipelines.train_vision.data import training_batches
    from pipelines.train_vision.held_out import evaluate, held_out_set
    from pipelines.train_vision.loop import (
        VisionLoopSettings,
        build_optimizer,
        for_export,
        restore_training_state,
        to_training_precision,
        train_steps,
        training_state,
    )
    from pipelines.train_vision.model import build_model
    from pipelines.train_vision.records import DataPosition, LoaderSettings

    job: VisionJob = job_of(loop_config)
    config = job.config
    rank, world, device = worker_context()
    model, transform = build_model(config, job.vision_model, job.llm_dim)
    if config.gradient_checkpointing:
        model.vision_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    model.to(device)
    loop = settings_from(VisionLoopSettings, config, pixel_mean=transform.mean, pixel_std=transform.std)
    master = to_training_precision(model, loop)
    if config.compile:  # in place: parameter names, checkpoints and the export stay as they are
        model.compile()
    optimizer, scheduler = build_optimizer(model, loop, master)
    position, start_step = DataPosition(), 0
    state = restored_state(map_location="cpu")
    if state is not None:
        start_step = restore_training_state(state, model, optimizer, scheduler, master)
        if len(state["positions"]) == world:
            position = DataPosition(**state["positions"][rank])
        else:  # another worker count deals shards differently: start the next epoch afresh
            position = DataPosition(epoch=max(p["epoch"] for p in state["positions"]) + 1)
            if rank == 0:  # the undecodable images met so far stay counted
                met = {tuple(e) for p in state["positions"] for e in p.get("undecodable", [])}
                position.undecodable = [list(e) for e in sorted(met)]
        print(
            f"[train_vision] rank {rank}: resumed from step {start_step} at epoch {position.epoch}, "
            f"batch {position.batches_in_epoch}" + (" (sought)" if position.stream else "")
        )

    loader = settings_from(
        LoaderSettings,
        config,
        batch_size=config.batch_size_per_worker,
        split=config.train_split_value,
        held_out_keys=job.samples.held_out_keys,
        transform=transform,
    )
    batches = training_batches(
        job.tar_paths, job.sidecars, loader, rank, world, position, job.samples.training_counts
    )
    metrics_log = Rank0Metrics(job.links, rank)
    autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None
    held_out = held_out_set(job.samples.held_out if rank == 0 else {}, job.sidecars, transform)

    def evaluate_now() -> dict[str, float]:
        return evaluate(model, held_out, device, config.eval_batch_size, autocast)

    clock = {"last": time.perf_counter(), "loop_started": time.perf_counter()}
    progress = StepProgress("train_vision", start_step, config.max_steps, "images")

    def on_step(step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        images = metrics.pop("images") * world
        images_per_s = images / max(now - clock["last"], 1e-9)
        clock["last"] = now
        if rank == 0:
            progress.step(step, metrics["loss"], images)
        final = step >= config.max_steps
        if step % LOG_EVERY_STEPS == 0 or final:
            logged = {**metrics, "images_per_s": images_per_s}
            metrics_log.log({f"train_{k}": v for k, v in logged.items()}, step)
        if rank == 0 and config.eval_every_steps and step % config.eval_every_steps == 0 and not final:
            scores = evaluate_now()
            progress.evaluated(step, scores)
            metrics_log.log({f"eval_{k}": v for k, v in scores.items()}, step)
        if step % config.checkpoint_every_steps == 0 or final:
            positions = [dataclasses.asdict(position)]
            if world > 1:  # every worker's data position goes into rank 0's checkpoint
                positions = [None] * world
                dist.all_gather_object(positions, dataclasses.asdict(position))
            report_with_checkpoint(
                {
                    "step": step,
                    "loss": metrics["loss"],
                    "start_step": start_step,
                    "loop_s": now - clock["loop_started"],
                },
                lambda: training_state(model, optimizer, scheduler, step, positions, master),
                rank,
            )
            if rank == 0:
                progress.checkpoint(step)

    train_steps(model, batches, loop, optimizer, scheduler, start_step, on_step, device, autocast, master)
    undecodable = [position.undecodable]
    if world > 1:
        undecodable = [None] * world
        dist.all_gather_object(undecodable, position.undecodable)
    if rank == 0:
        met = {tuple(e) for entries in undecodable for e in entries} | set(held_out.undecodable)
        write_undecodable(ArtifactDir(job.links.artifact_uri), sorted(met))
        final = evaluate_now()
        progress.evaluated(config.max_steps, final)
        metrics_log.log({f"eval_{k}": v for k, v in final.items()}, config.max_steps)
        artifact = ArtifactDir(job.links.artifact_uri)
        artifact.write_json_atomic("eval.json", final)
        model = for_export(model, master)
        with artifact.local_dir("export") as folder:
            save_export(model, transform, folder)
        with artifact.local_dir("vision_tower") as folder:
            model.save_vision_tower(folder)


def write_undecodable(artifact: ArtifactDir, entries: list[tuple[str, str]]) -> None:
    """The rejected sink of images that training or the held-out set could not decode."""
    import pyarrow as pa

    from pipelines.train_vision.sample_plan import REJECTED_SCHEMA

    rows = {
        "key": [key for _, key in entries],
        "shard": [shard for shard, _ in entries],
        "reason": [UNDECODABLE_IMAGE] * len(entries),
    }
    artifact.write_parquet_atomic(UNDECODABLE_FILE, pa.table(rows, schema=REJECTED_SCHEMA))


def cpus_per_worker(config: TrainVisionConfig) -> float:
    """The training process and its decode processes: Ray places a worker only where all their cores are."""
    return 1.0 + config.decode_processes


def run_training(
    config: TrainVisionConfig,
    vision_model: str,
    llm_dim: int,
    tar_paths: list[str],
    sidecars: dict[str, str],
    samples: SamplePlan,
    ctx: StageContext,
) -> dict[str, float]:
    """TorchTrainer; its storage under the artifact lets a rerun resume from the last checkpoint."""
    job = VisionJob(config, vision_model, llm_dim, tar_paths, sidecars, samples, run_links(ctx))
    result, elapsed = fit_in_artifact(train_worker, job, config, ctx, cpus_per_worker=cpus_per_worker(config))
    start_step = int(result.metrics.get("start_step", 0))
    images = (config.max_steps - start_step) * config.batch_size_per_worker * config.num_workers
    final = ctx.artifact.read_json("eval.json")
    return {
        "final_loss": float(result.metrics.get("loss", float("nan"))),
        "resumed_from_step": float(start_step),
        "train_s": elapsed,
        "images_per_s": images / max(float(result.metrics.get("loop_s", elapsed)), 1e-9),
        **{f"eval_{k}": float(v) for k, v in final.items()},
    }
