"""Ray Train side of finetune_text: the per-worker function (MNTP, LoRA, the contrastive steps,
checkpoints, rank-0 MLflow, CRA before and after) and the trainer that runs it."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from ops.artifact_dir import ArtifactDir
from ops.config_schema import settings_from
from ops.progress import StepProgress
from ops.stage import StageContext
from pipelines.finetune_text.config import FinetuneTextConfig
from pipelines.ray_train import RunLinks, fit_in_artifact, job_of, run_links

LOG_EVERY_STEPS = 5


@dataclasses.dataclass(frozen=True)
class FinetuneJob:
    """What every worker is handed: the stage config, the base model and the pair files."""

    config: FinetuneTextConfig
    base_model: str  # HF id or folder of the base LLM
    pairs_uri: str  # pairs/train.parquet: each worker reads the row groups its steps reach (batches.py)
    eval_pairs_uri: str  # pairs/eval.parquet, which rank 0 scores CRA on
    links: RunLinks


def train_worker(loop_config: dict[str, Any]) -> dict[str, float] | None:
    """Runs on every Ray Train worker; torch.distributed (gloo/nccl) is up when it starts. Rank 0 returns
    the held-out CRA of the base LLM and of the trained encoder (Ray Train hands it to the driver)."""

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_io import (
        apply_lora,
        enable_gradient_checkpointing,
        load_backbone,
        save_text_encoder,
    )
    from pipelines.finetune_text.batches import pair_batches
    from pipelines.finetune_text.cra import base_cra, held_out_cra, saved_encoder_cra
    from pipelines.finetune_text.loop import LoopSettings, build_optimizer, train_steps
    from pipelines.finetune_text.mntp import mntp_backbone
    from pipelines.finetune_text.pair_groups import PairGroups
    from pipelines.finetune_text.pairs import read_held_out_pairs
    from pipelines.ray_train import Rank0Metrics, report_with_checkpoint, restored_state, worker_context

    job: FinetuneJob = job_of(loop_config)
    config = job.config
    rank, world, device = worker_context()
    artifact = ArtifactDir(job.links.artifact_uri)
    torch.manual_seed(config.seed)
    metrics_log = Rank0Metrics(job.links, rank)
    pairs = PairGroups.of_parquet(job.pairs_uri)  # the footer only; windows are read as steps reach them
    held_out = read_held_out_pairs(job.eval_pairs_uri, config.cra_query_column) if rank == 0 else None
    cra: dict[str, float] = {}

    def score_base(load) -> None:  # load() -> (base backbone, tokenizer); only rank 0 needs them
        if rank == 0:
            cra["cra_base"] = base_cra(*load(), config, held_out, device)

    def log_mntp(step: int, metrics: dict[str, float]) -> None:
        if step % LOG_EVERY_STEPS == 0 or step == config.mntp_steps:
            metrics_log.log({"train_mntp_loss": metrics["mntp_loss"]}, step)

    if config.mntp_steps > 0:  # the base LLM is loaded once either way: 8B weights are slow to read
        backbone, tokenizer = mntp_backbone(
            config, job.base_model, artifact, pairs, device, log_mntp, score_base
        )
        backbone = backbone.cpu()
    else:
        backbone, tokenizer = load_backbone(job.base_model, config.trust_remote_code)
        score_base(lambda: (backbone, tokenizer))
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    torch.manual_seed(config.seed)  # LoRA's initial weights: the same whether or not MNTP ran first
    if config.lora is not None:
        backbone = apply_lora(backbone, config.lora)
    encoder = LLMTextEncoder(backbone, config.encoder).to(device)
    loop = settings_from(LoopSettings, config)
    optimizer, scheduler = build_optimizer(encoder, loop)
    start_step = 0
    state = restored_state(map_location=device)
    if state is not None:
        trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
        for name, tensor in state["trainable"].items():
            trainable[name].data.copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = state["step"]
        print(f"[finetune_text] rank {rank}: resumed from step {start_step}")

    autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None
    pending: list[tuple[int, dict[str, float]]] = []
    progress = StepProgress("finetune_text", start_step, config.max_steps, "pairs")

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {
            "trainable": {n: p.detach().cpu() for n, p in encoder.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
        }

    def on_step(step: int, metrics: dict[str, float]) -> None:
        pending.append((step, metrics))
        if rank == 0:
            progress.step(step, metrics["loss"], config.batch_size_per_worker * world)
        final = step >= config.max_steps
        checkpoint_now = step % config.checkpoint_every_steps == 0 or final
        # Flushed before every checkpoint too: the steps a checkpoint covers are in MLflow before it is
        # reported, so a run killed after it and resumed from it leaves no step without its loss.
        if step % LOG_EVERY_STEPS == 0 or checkpoint_now:
            for logged_step, logged in pending:
                metrics_log.log({f"train_{name}": value for name, value in logged.items()}, logged_step)
            pending.clear()
        if checkpoint_now:
            loop_s = time.perf_counter() - loop_started
            report_with_checkpoint(
                {"step": step, "loss": metrics["loss"], "start_step": start_step, "loop_s": loop_s},
                lambda: checkpoint_state(step),
                rank,
            )
            if rank == 0:
                progress.checkpoint(step)

    loop_started = time.perf_counter()
    # From the checkpoint's step on, the batches an uninterrupted run would see (step -> rows).
    batches = pair_batches(
        pairs,
        config.batch_size_per_worker,
        rank,
        world,
        config.seed,
        start_step,
        config.query_side,
        config.shuffle_window_pairs,
    )
    train_steps(
        encoder, tokenizer, batches, loop, optimizer, scheduler, start_step, on_step, device, autocast
    )
    if rank != 0:
        return None
    # The LoRA model's own score, for comparison; the stage reports the saved encoder's (below).
    cra["cra_finetuned_unmerged"] = held_out_cra(encoder, tokenizer, held_out, autocast)
    with artifact.local_dir("encoder") as folder:
        save_text_encoder(encoder.eval(), tokenizer, folder)  # merges LoRA in fp32, on the CPU
        cra["cra_finetuned"] = saved_encoder_cra(folder, held_out, device, autocast)
    return cra


def run_training(
    config: FinetuneTextConfig, base_model: str, pairs_uri: str, eval_pairs_uri: str, ctx: StageContext
) -> dict[str, float]:
    """TorchTrainer over the training pairs; Ray Train's storage under the artifact resumes a rerun.
    Returns the run's metrics with cra_base and cra_finetuned on the held-out pairs."""
    job = FinetuneJob(config, base_model, pairs_uri, eval_pairs_uri, run_links(ctx))
    result, elapsed = fit_in_artifact(train_worker, job, config, ctx)
    steps = config.max_steps - int(result.metrics.get("start_step", 0))
    pairs = steps * config.batch_size_per_worker * config.num_workers
    loop_s = float(result.metrics.get("loop_s", elapsed))
    return {
        **result.return_value,  # rank 0's CRA before and after
        "final_loss": float(result.metrics.get("loss", float("nan"))),
        "resumed_from_step": float(result.metrics.get("start_step", 0)),
        "train_s": elapsed,  # fit() wall time: worker start, model load, MNTP, steps, checkpoints
        "pairs_per_s": pairs / max(elapsed, 1e-9),
        "loop_pairs_per_s": pairs / max(loop_s, 1e-9),  # the training steps alone, on rank 0's clock
    }
