"""The caption-contrastive training loop, free of Ray: it runs in one process (tests, bench) or per Ray
Train worker, where torch.distributed is already initialised and keys are gathered across workers."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable

import torch

from models.text_encoder import LLMTextEncoder, build_text_inputs
from ops.contrastive import info_nce_loss
from ops.distributed import average_gradients, gather_with_grad, rank_and_world
from ops.schedules import warmup_cosine_scheduler

# "query_side" and "key_side" caption lists of equal length, optionally "hard_negative" and
# "query_instruction" (each query's own instruction, left out of pooling)
Batch = dict[str, list[str]]


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    temperature: float
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_steps: int
    max_grad_norm: float
    seed: int


def order_sides(columns: dict[str, list[str]], query_side: str, rng: random.Random) -> Batch:
    """query_side "first": caption_1 (the alt-text or short caption) is every pair's query and caption_2
    (the dense caption) its key, as LLM2Vec's supervised loader keeps query and document apart. "random":
    drawn per pair (swap_sides). Fixed sides keep one kind of caption among the keys, so the softmax
    compares captions of one kind; with random sides a pretrained LLM, whose pooled features first say how
    long and what kind a caption is, lowers the loss fastest by making every caption alike (measured on
    the long-caption experiment: loss stuck at ln(batch) and validation CRA 0.02 with random sides,
    CRA 0.56 with fixed ones)."""
    if query_side == "random":
        return swap_sides(columns, rng)
    batch: Batch = {"query_side": list(columns["caption_1"]), "key_side": list(columns["caption_2"])}
    if "hard_negative_2" in columns:
        batch["hard_negative"] = list(columns["hard_negative_2"])
    if "query_instruction" in columns:
        batch["query_instruction"] = list(columns["query_instruction"])
    return batch


def swap_sides(columns: dict[str, list[str]], rng: random.Random) -> Batch:
    """Which caption of a pair is the query is drawn per pair, so the encoder learns both directions.
    With hard negatives, the key side's negative is the partner image's caption of the key's kind."""
    with_negatives = "hard_negative_1" in columns
    batch: Batch = {"query_side": [], "key_side": []}
    if with_negatives:
        batch["hard_negative"] = []
    for i, (first, second) in enumerate(zip(columns["caption_1"], columns["caption_2"])):
        flipped = rng.random() < 0.5
        batch["query_side"].append(second if flipped else first)
        batch["key_side"].append(first if flipped else second)
        if with_negatives:
            batch["hard_negative"].append(columns["hard_negative_1" if flipped else "hard_negative_2"][i])
    return batch


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step) * 1009 + rank


def build_optimizer(model: torch.nn.Module, settings: LoopSettings):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    return optimizer, warmup_cosine_scheduler(optimizer, settings.warmup_steps, settings.max_steps)


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
        # Dropout's draws depend on the step alone, not on what ran before in this process: a run resumed
        # at this step draws what the uninterrupted run drew.
        torch.manual_seed(step_seed(settings.seed, step, rank))
        query_inputs = build_text_inputs(
            tokenizer, batch["query_side"], encoder.config, batch.get("query_instruction")
        )
        key_inputs = build_text_inputs(tokenizer, batch["key_side"], encoder.config)
        negative_inputs = (
            build_text_inputs(tokenizer, batch["hard_negative"], encoder.config)
            if "hard_negative" in batch
            else None
        )
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            queries = encoder(**{k: v.to(device) for k, v in query_inputs.items()})
            keys = encoder(**{k: v.to(device) for k, v in key_inputs.items()})
            negatives = (
                encoder(**{k: v.to(device) for k, v in negative_inputs.items()}) if negative_inputs else None
            )
        all_negatives = gather_with_grad(negatives) if negatives is not None else None
        loss = info_nce_loss(
            queries,
            gather_with_grad(keys),
            settings.temperature,
            hard_negatives=all_negatives,
            labels_offset=rank * queries.shape[0],
        )
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


@dataclasses.dataclass(frozen=True)
class MntpSettings:
    steps: int
    learning_rate: float
    mask_probability: float
    mask_token: str
    max_length: int  # tokens per caption
    seed: int


def mntp_steps(
    causal_lm: torch.nn.Module,
    tokenizer,
    text_batches: Iterable[list[str]],
    settings: MntpSettings,
    on_step: Callable[[int, dict[str, float]], None],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """LLM2Vec's MNTP warm-up on captions: trains what requires grad (LoRA) for settings.steps steps,
    gradients averaged across workers; returns the steps done."""
    from models.mntp import mask_for_mntp, mntp_loss, resolve_mask_token_id

    rank, _ = rank_and_world()
    generator = torch.Generator().manual_seed(settings.seed * 7919 + rank)
    mask_id = resolve_mask_token_id(tokenizer, settings.mask_token)
    trainable = [p for p in causal_lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    causal_lm.train()
    step = 0
    for texts in text_batches:
        if step >= settings.steps:
            break
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=settings.max_length, return_tensors="pt"
        )
        special = torch.tensor(
            [
                tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                for ids in batch.input_ids.tolist()
            ]
        )
        maskable = batch.attention_mask.bool() & ~special.bool()
        masked, labels = mask_for_mntp(
            batch.input_ids, maskable, mask_id, settings.mask_probability, len(tokenizer), generator
        )
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = mntp_loss(causal_lm, masked.to(device), batch.attention_mask.to(device), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(trainable)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        on_step(step, {"mntp_loss": loss.item()})
    return step
