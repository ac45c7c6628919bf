"""Ray Train side of train_vision: model construction, the per-worker function, checkpoints, rank-0
MLflow logging, the periodic evaluation hook and the export."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ops.artifact_dir import ArtifactDir
from ops.image_transforms import CLIP_MEAN, CLIP_STD, ImageTransformConfig
from ops.model_files import local_model
from ops.stage import StageContext

LOG_EVERY_STEPS = 5
PREPROCESSOR_FILE = "preprocessor_config.json"


def load_vision_tower(vision_model: str):
    """(tower, mean, std) from an HF id or folder (mean/std from its preprocessor config), or from timm
    with "timm:<model name>" (EVA02 etc., pretrained weights through timm; GPU profile)."""
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    from models.timm_tower import TIMM_PREFIX, TimmVisionTower

    if vision_model.startswith(TIMM_PREFIX):
        tower = TimmVisionTower.from_timm(vision_model.removeprefix(TIMM_PREFIX), pretrained=True)
        return tower, tuple(tower.config.image_mean), tuple(tower.config.image_std)

    # Object-store folders are staged locally; HF ids and local folders load as they are.
    with local_model(vision_model) as source:
        config = AutoConfig.from_pretrained(source)
        tower_cls = SiglipVisionModel if "siglip" in config.model_type else CLIPVisionModel
        tower = tower_cls.from_pretrained(source, use_safetensors=True)
        mean, std = CLIP_MEAN, CLIP_STD
        processor_file = Path(source) / PREPROCESSOR_FILE
        if processor_file.is_file():
            processor = json.loads(processor_file.read_text())
            mean = tuple(processor.get("image_mean", mean))
            std = tuple(processor.get("image_std", std))
    return tower, mean, std


def build_model(config, vision_model: str, llm_dim: int):
    """(LLM2CLIPModel, ImageTransformConfig) with the tower's weights and the adapter freshly initialised
    (seeded, so every worker starts identical)."""
    from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel

    tower, mean, std = load_vision_tower(vision_model)
    torch.manual_seed(config.seed)
    model_config = LLM2CLIPConfig(
        llm_dim=llm_dim,
        adapter_width=config.adapter_width,
        adapter_depth=config.adapter_depth,
        projection_dim=config.projection_dim,
        adapter_dropout=config.adapter_dropout,
        logit_scale_init=config.logit_scale_init,
    )
    model = LLM2CLIPModel.with_vision_tower(model_config, tower)
    transform = ImageTransformConfig(
        size_px=int(tower.config.image_size), train_scale=tuple(config.train_crop_scale), mean=mean, std=std
    )
    return model, transform


def evaluate(model, held_out: dict, device) -> dict[str, float]:
    """I2T / T2I recall@1/5/10 on the held-out samples, against the dense and the original captions."""
    from ops.retrieval_metrics import image_text_recalls

    model.eval()
    metrics = {}
    with torch.no_grad():
        for field, (pixels, features) in held_out.items():
            out = model(pixel_values=pixels.to(device), llm_embeddings=features.to(device))
            recalls = image_text_recalls(out["image_embeds"].float().cpu(), out["text_embeds"].float().cpu())
            metrics.update({f"{field}_{name}": value for name, value in recalls.items()})
            metrics[f"{field}_eval_samples"] = float(len(features))
    model.train()
    return metrics


def held_out_set(settings: dict[str, Any], transform) -> dict:
    """Loaded once per run (rank 0): decoding the held-out images again at every eval would cost a scan."""
    from pipelines.train_vision.data import eval_arrays

    config = settings["config"]
    held_out = eval_arrays(
        settings["tar_paths"],
        settings["sidecars"],
        config.eval_split_value,
        transform,
        ("dense", "original"),
        config.eval_max_samples,
    )
    if not held_out:
        print(f"[train_vision] no samples with split {config.eval_split_value!r}: evaluation skipped")
    return held_out


def train_worker(settings: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; torch.distributed is up when it starts."""
    import mlflow
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from pipelines.train_vision.data import DataPosition, LoaderSettings, training_batches
    from pipelines.train_vision.loop import (
        VisionLoopSettings,
        build_optimizer,
        restore_training_state,
        train_steps,
        training_state,
    )

    config = settings["config"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    model, transform = build_model(config, settings["vision_model"], settings["llm_dim"])
    if config.gradient_checkpointing:
        model.vision_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    model.to(device)
    loop = VisionLoopSettings(
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        max_grad_norm=config.max_grad_norm,
        layer_decay=config.layer_decay,
    )
    optimizer, scheduler = build_optimizer(model, loop)
    position, start_step = DataPosition(), 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=True)
        start_step = restore_training_state(state, model, optimizer, scheduler)
        if len(state["positions"]) == world:
            position = DataPosition(**state["positions"][rank])
        else:  # another worker count deals shards differently: start the next epoch afresh
            position = DataPosition(epoch=max(p["epoch"] for p in state["positions"]) + 1)
        print(f"[train_vision] rank {rank}: resumed from step {start_step} at {position}")

    loader = LoaderSettings(
        batch_size=config.batch_size_per_worker,
        dense_ratio=config.dense_ratio,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
        split=config.train_split_value,
        transform=transform,
    )
    batches = training_batches(
        settings["tar_paths"],
        settings["sidecars"],
        loader,
        rank,
        world,
        position,
        settings["training_counts"],
    )
    client = None
    if rank == 0 and settings.get("tracking_uri") and settings.get("run_id"):
        client = mlflow.MlflowClient(settings["tracking_uri"])
    autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None
    held_out = held_out_set(settings, transform) if rank == 0 else {}
    clock = {"last": time.perf_counter(), "loop_started": time.perf_counter()}

    def log(step: int, metrics: dict[str, float]) -> None:
        if client is not None:
            for name, value in metrics.items():
                client.log_metric(settings["run_id"], name, value, step=step)

    def on_step(step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        images_per_s = metrics.pop("images") * world / max(now - clock["last"], 1e-9)
        clock["last"] = now
        final = step >= config.max_steps
        if step % LOG_EVERY_STEPS == 0 or final:
            log(step, {f"train_{k}": v for k, v in {**metrics, "images_per_s": images_per_s}.items()})
        if rank == 0 and config.eval_every_steps and step % config.eval_every_steps == 0 and not final:
            log(step, {f"eval_{k}": v for k, v in evaluate(model, held_out, device).items()})
        if step % config.checkpoint_every_steps == 0 or final:
            positions = [dataclasses.asdict(position)]
            if world > 1:  # every worker's data position goes into rank 0's checkpoint
                positions = [None] * world
                dist.all_gather_object(positions, dataclasses.asdict(position))
            with tempfile.TemporaryDirectory() as folder:
                if rank == 0:
                    torch.save(
                        training_state(model, optimizer, scheduler, step, positions),
                        Path(folder) / "state.pt",
                    )
                ray.train.report(
                    {
                        "step": step,
                        "loss": metrics["loss"],
                        "start_step": start_step,
                        "loop_s": now - clock["loop_started"],
                    },
                    checkpoint=ray.train.Checkpoint.from_directory(folder) if rank == 0 else None,
                )

    train_steps(model, batches, loop, optimizer, scheduler, start_step, on_step, device, autocast)
    if rank == 0:
        final = evaluate(model, held_out, device)
        log(config.max_steps, {f"eval_{k}": v for k, v in final.items()})
        artifact = ArtifactDir(settings["artifact_uri"])
        artifact.write_json_atomic("eval.json", final)
        model = model.cpu().eval()
        with artifact.local_dir("export") as folder:
            model.save_pretrained(folder, safe_serialization=True)
            preprocessor = {
                "image_size": transform.size_px,
                "image_mean": list(transform.mean),
                "image_std": list(transform.std),
            }
            (Path(folder) / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2))
        with artifact.local_dir("vision_tower") as folder:
            model.save_vision_tower(folder)


def run_training(
    config, vision_model: str, llm_dim: int, tar_paths, sidecars, training_counts, ctx: StageContext
) -> dict[str, float]:
    """TorchTrainer; its storage under the artifact lets a rerun resume from the last checkpoint."""
    from pipelines.ray_train import fit_in_artifact

    loop_config = {
        "config": config,
        "vision_model": vision_model,
        "llm_dim": llm_dim,
        "tar_paths": tar_paths,
        "sidecars": sidecars,
        "training_counts": training_counts,
    }
    result, elapsed = fit_in_artifact(train_worker, loop_config, config, ctx)
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
