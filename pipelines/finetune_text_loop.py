"""The caption-contrastive training loop, free of Ray: it runs in one process (GPU checks) or per Ray
Train worker, where torch.distributed is already initialised and keys are gathered across workers."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from models.text_encoder import LLMTextEncoder, build_text_inputs
from ops.contrastive import info_nce_loss

Batch = dict[str, list[str]]  # "query_side" and "key_side" caption lists of equal length


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    temperature: float
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_steps: int
    max_grad_norm: float
    seed: int


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """All workers' rows, keeping the gradient to the local ones (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local), dim=0)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Mean of every worker's gradients (what DDP does), done by hand: each step runs the encoder twice
    (queries and keys) before one backward, and only the small LoRA tensors need reducing."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def swap_sides(originals: list[str], denses: list[str], rng: random.Random) -> Batch:
    """Which caption is the query is drawn per pair, so the encoder learns both directions."""
    query, key = [], []
    for a, b in zip(originals, denses):
        if rng.random() < 0.5:
            a, b = b, a
        query.append(a)
        key.append(b)
    return {"query_side": query, "key_side": key}


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(model: torch.nn.Module, settings: LoopSettings):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, settings.warmup_steps, settings.max_steps)
    )
    return optimizer, scheduler


def train_steps(
    encoder: LLMTextEncoder,
    tokenizer,
    batches: Iterable[Batch],
    settings: LoopSettings,
    optimizer,
    scheduler,
    start_step: int,
    on_step: Callable[[int, dict[str, float]], None],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """Optimise until max_steps or the batches run out; returns the last step done. on_step gets
    (step, metrics) after every step, for logging and checkpointing."""
    rank, _ = rank_and_world()
    encoder.train()
    step = start_step
    for batch in batches:
        if step >= settings.max_steps:
            break
        query_inputs = build_text_inputs(tokenizer, batch["query_side"], encoder.config)
        key_inputs = build_text_inputs(tokenizer, batch["key_side"], encoder.config)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            queries = encoder(**{k: v.to(device) for k, v in query_inputs.items()})
            keys = encoder(**{k: v.to(device) for k, v in key_inputs.items()})
        all_keys = gather_with_grad(keys)
        loss = info_nce_loss(queries, all_keys, settings.temperature, labels_offset=rank * queries.shape[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainable = [p for p in encoder.parameters() if p.requires_grad]
        average_gradients(trainable)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        on_step(step, {"loss": loss.item(), "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm)})
    return step


def pair_batches(rows: Iterable[dict[str, Any]], batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
    """Plain-Python batching of {original, dense} rows (the no-Ray path); drops the last partial batch
    so that every step has batch_size pairs on every worker."""
    rng = random.Random(seed * 1_000_003 + epoch)
    originals, denses = [], []
    for row in rows:
        originals.append(row["original"])
        denses.append(row["dense"])
        if len(originals) == batch_size:
            yield swap_sides(originals, denses, rng)
            originals, denses = [], []
