"""Ray Train side of finetune_text: the per-worker function, checkpoints, rank-0 MLflow, CRA."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ops.artifact_dir import ArtifactDir
from ops.stage import StageContext

LOG_EVERY_STEPS = 5
MNTP_FOLDER = "mntp_model"
MNTP_DONE = "_DONE"


def _load_backbone(model: str, trust_remote_code: bool, causal_lm: bool = False):
    """(model, tokenizer): the base model (hidden states), or with causal_lm the model with its LM head
    (for MNTP). Weights only from safetensors."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from ops.model_files import local_model

    with local_model(model) as source:  # an object-store folder is copied to this node first
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        loader = AutoModelForCausalLM if causal_lm else AutoModel
        backbone = loader.from_pretrained(source, trust_remote_code=trust_remote_code, use_safetensors=True)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:  # Llama tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return backbone, tokenizer


def read_training_pairs(pairs_uri: str) -> pa.Table:
    """The stage's pairs/train.parquet without its bookkeeping columns: what the loss reads."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(pairs_uri, "rb") as handle:
        table = pq.read_table(handle)
    return table.drop_columns([c for c in ("key", "kind") if c in table.column_names])


def read_held_out_pairs(eval_pairs_uri: str, query_column: str = "original") -> pa.Table:
    """pairs/eval.parquet: the held-out images' captions that CRA scores, as (original, dense): the
    query column (the original caption, or the short_dense one) under the name "original"."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(eval_pairs_uri, "rb") as handle:
        table = pq.read_table(handle, columns=[query_column, "dense"])
    return table.rename_columns(["original", "dense"])


def held_out_cra(encoder, tokenizer, held_out: pa.Table) -> float:
    """CRA of an encoder on the held-out pairs: each original caption must retrieve its own dense one.
    In eval mode and without gradients, so it draws no random numbers and leaves training as it was."""
    from ops.retrieval_metrics import caption_retrieval_accuracy

    modes = {module: module.training for module in encoder.modules()}
    encoder.eval()
    first = encoder.encode(tokenizer, held_out["original"].to_pylist())
    second = encoder.encode(tokenizer, held_out["dense"].to_pylist())
    for module, training in modes.items():
        module.train(training)
    return caption_retrieval_accuracy(first, second)


def _base_cra(backbone, tokenizer, config, held_out: pa.Table, device) -> float:
    """CRA of the base LLM under the stage's pooling settings (before MNTP and LoRA), on the worker's
    device (the backbone moves there in place; training moves it there next anyway)."""
    from models.text_encoder import LLMTextEncoder

    encoder = LLMTextEncoder(backbone, dataclasses.replace(config.encoder)).to(device)
    return held_out_cra(encoder, tokenizer, held_out)


def _mntp_backbone(config, settings: dict[str, Any], pairs: pa.Table, device, log, base_cra):
    """LLM2Vec's MNTP step before contrastive training: LoRA on the causal LM, merged afterwards. Rank 0
    saves the merged model under the artifact (mntp_model/), so a restarted worker or a rerun loads it
    instead of training it again. base_cra(load) scores the base LLM before MNTP; load() returns the one
    loaded here, or loads it when MNTP is already done (only rank 0 calls it).
    Returns (backbone, tokenizer)."""
    import torch.distributed as dist

    from models.text_encoder_io import apply_lora, enable_gradient_checkpointing
    from ops.distributed import rank_and_world
    from pipelines.finetune_text.batches import pair_batches
    from pipelines.finetune_text.loop import MntpSettings, mntp_steps

    artifact = ArtifactDir(settings["artifact_uri"])
    if artifact.exists(f"{MNTP_FOLDER}/{MNTP_DONE}"):
        base_cra(lambda: _load_backbone(settings["base_model"], config.trust_remote_code))
        with artifact.local_copy(MNTP_FOLDER) as folder:
            return _load_backbone(folder, config.trust_remote_code)
    causal, tokenizer = _load_backbone(settings["base_model"], config.trust_remote_code, causal_lm=True)
    base_cra(lambda: (causal.base_model, tokenizer))
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(causal)
    if config.lora is not None:
        causal = apply_lora(causal, config.lora)
    causal.to(device)

    rank, world = rank_and_world()
    text_batches = (
        batch["query_side"] + batch["key_side"]
        for batch in pair_batches(
            pairs, config.batch_size_per_worker, rank, world, config.seed, query_side=config.query_side
        )
    )

    mntp = MntpSettings(
        steps=config.mntp_steps,
        learning_rate=config.mntp_learning_rate,
        mask_probability=config.mntp_mask_probability,
        mask_token=config.mntp_mask_token,
        max_length=config.encoder.max_length,
        seed=config.seed,
    )
    autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None
    mntp_steps(causal, tokenizer, text_batches, mntp, log, device, autocast)
    if config.lora is not None:
        causal = causal.merge_and_unload()
    if rank == 0:
        with artifact.local_dir(MNTP_FOLDER) as folder:
            causal.base_model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
        artifact.write_bytes_atomic(f"{MNTP_FOLDER}/{MNTP_DONE}", b"")
    if world > 1:
        dist.barrier()
    return causal.base_model, tokenizer


def train_worker(settings: dict[str, Any]) -> dict[str, float] | None:
    """Runs on every Ray Train worker; torch.distributed (gloo/nccl) is up when it starts. Rank 0 returns
    the held-out CRA of the base LLM and of the trained encoder (Ray Train hands it to the driver)."""
    import mlflow
    import ray.train
    import ray.train.torch

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_io import apply_lora, enable_gradient_checkpointing, save_text_encoder
    from pipelines.finetune_text.batches import pair_batches
    from pipelines.finetune_text.loop import LoopSettings, build_optimizer, train_steps
    from pipelines.finetune_text.stage import FinetuneTextConfig

    config: FinetuneTextConfig = settings["config"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed)
    client = None
    if rank == 0 and settings.get("tracking_uri") and settings.get("run_id"):
        client = mlflow.MlflowClient(settings["tracking_uri"])
    pairs = read_training_pairs(settings["pairs_uri"])
    held_out = read_held_out_pairs(settings["eval_pairs_uri"], config.cra_query_column) if rank == 0 else None
    cra: dict[str, float] = {}

    def base_cra(load) -> None:  # load() -> (base backbone, tokenizer); only rank 0 needs them
        if rank == 0:
            cra["cra_base"] = _base_cra(*load(), config, held_out, device)

    def log_mntp(step: int, metrics: dict[str, float]) -> None:
        if client is not None and (step % LOG_EVERY_STEPS == 0 or step == config.mntp_steps):
            client.log_metric(settings["run_id"], "train_mntp_loss", metrics["mntp_loss"], step=step)

    if config.mntp_steps > 0:  # the base LLM is loaded once either way: 8B weights are slow to read
        backbone, tokenizer = _mntp_backbone(config, settings, pairs, device, log_mntp, base_cra)
        backbone = backbone.cpu()
    else:
        backbone, tokenizer = _load_backbone(settings["base_model"], config.trust_remote_code)
        base_cra(lambda: (backbone, tokenizer))
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    torch.manual_seed(config.seed)  # LoRA's initial weights: the same whether or not MNTP ran first
    if config.lora is not None:
        backbone = apply_lora(backbone, config.lora)
    encoder = LLMTextEncoder(backbone, config.encoder).to(device)
    loop = LoopSettings(
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
    )
    optimizer, scheduler = build_optimizer(encoder, loop)
    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "state.pt", map_location=device, weights_only=True)
        trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
        for name, tensor in state["trainable"].items():
            trainable[name].data.copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = state["step"]
        print(f"[finetune_text] rank {rank}: resumed from step {start_step}")

    autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None
    pending: list[tuple[int, dict[str, float]]] = []

    def on_step(step: int, metrics: dict[str, float]) -> None:
        pending.append((step, metrics))
        final = step >= config.max_steps
        checkpoint_now = step % config.checkpoint_every_steps == 0 or final
        # Flushed before every checkpoint too: the steps a checkpoint covers are in MLflow before it is
        # reported, so a run killed after it and resumed from it leaves no step without its loss.
        if client is not None and (step % LOG_EVERY_STEPS == 0 or checkpoint_now):
            for logged_step, logged in pending:
                for name, value in logged.items():
                    client.log_metric(settings["run_id"], f"train_{name}", value, step=logged_step)
            pending.clear()
        if checkpoint_now:
            with tempfile.TemporaryDirectory() as folder:
                if rank == 0:
                    state = {
                        "trainable": {
                            n: p.detach().cpu() for n, p in encoder.named_parameters() if p.requires_grad
                        },
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                    }
                    torch.save(state, Path(folder) / "state.pt")
                loop_s = time.perf_counter() - loop_started
                ray.train.report(
                    {"step": step, "loss": metrics["loss"], "start_step": start_step, "loop_s": loop_s},
                    checkpoint=ray.train.Checkpoint.from_directory(folder) if rank == 0 else None,
                )

    loop_started = time.perf_counter()
    # From the checkpoint's step on, the batches an uninterrupted run would see (step -> rows).
    batches = pair_batches(
        pairs, config.batch_size_per_worker, rank, world, config.seed, start_step, config.query_side
    )
    train_steps(
        encoder, tokenizer, batches, loop, optimizer, scheduler, start_step, on_step, device, autocast
    )
    if rank != 0:
        return None
    # Before saving: the save merges LoRA into the backbone.
    cra["cra_finetuned"] = held_out_cra(encoder, tokenizer, held_out)
    artifact = ArtifactDir(settings["artifact_uri"])
    with artifact.local_dir("encoder") as folder:
        save_text_encoder(encoder.cpu().eval(), tokenizer, folder)
    return cra


def run_training(
    config, base_model: str, pairs_uri: str, eval_pairs_uri: str, ctx: StageContext
) -> dict[str, float]:
    """TorchTrainer over the training pairs (pairs/train.parquet, which every worker reads and deals
    itself: see batches.py); Ray Train's storage under the artifact resumes a rerun. Returns
    the run's metrics with cra_base and cra_finetuned on the held-out pairs."""
    from pipelines.ray_train import fit_in_artifact

    loop_config = {
        "config": config,
        "base_model": base_model,
        "pairs_uri": pairs_uri,
        "eval_pairs_uri": eval_pairs_uri,
    }
    result, elapsed = fit_in_artifact(train_worker, loop_config, config, ctx)
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
