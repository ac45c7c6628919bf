"""Next-token-prediction pretraining of a causal LM on a document stream (plain torch, one process).

Documents are tokenized with BOS, closed with EOS and packed end to end into blocks of seq_len tokens, as
GPT-style pretraining does, so no step wastes compute on padding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator

import torch

from ops.schedules import warmup_cosine_scheduler


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    max_steps: int
    batch_size: int  # sequences per step
    seq_len: int  # tokens per sequence
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_grad_norm: float
    eval_every_steps: int
    eval_batches: int  # validation batches per evaluation


def packed_blocks(documents: Iterable[str], tokenizer, seq_len: int) -> Iterator[list[int]]:
    """Blocks of exactly seq_len token ids: documents with BOS, then EOS, concatenated and cut."""
    buffer: list[int] = []
    for text in documents:
        buffer += tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        while len(buffer) >= seq_len:
            yield buffer[:seq_len]
            buffer = buffer[seq_len:]


def batches(blocks: Iterator[list[int]], batch_size: int) -> Iterator[torch.Tensor]:
    while True:
        yield torch.tensor([next(blocks) for _ in range(batch_size)], dtype=torch.long)


@torch.no_grad()
def mean_loss(model, batch_source: Iterable[torch.Tensor]) -> float:
    """Mean next-token loss (nats per token) over the batches; perplexity is its exponential."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ids in batch_source:
        loss = model(input_ids=ids, labels=ids).loss
        tokens = ids.numel() - ids.shape[0]  # the first token of each row has no prediction
        total, count = total + loss.item() * tokens, count + tokens
    model.train(was_training)
    return total / max(count, 1)


def pretrain(
    model,
    train_batches: Iterator[torch.Tensor],
    validation: list[torch.Tensor],
    settings: PretrainSettings,
    on_metrics: Callable[[int, dict[str, float]], None],
) -> dict[str, float]:
    """max_steps of AdamW on next-token loss with warm-up + cosine; validation loss every
    eval_every_steps and at the end. Returns the final train and validation losses."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    scheduler = warmup_cosine_scheduler(optimizer, settings.warmup_steps, settings.max_steps)
    model.train()
    recent: list[float] = []
    validation_loss = math.nan
    for step in range(1, settings.max_steps + 1):
        ids = next(train_batches)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        recent = [*recent[-19:], loss.item()]
        metrics = {"train_loss": loss.item(), "learning_rate": scheduler.get_last_lr()[0]}
        if step % settings.eval_every_steps == 0 or step == settings.max_steps:
            validation_loss = mean_loss(model, validation)
            metrics.update(
                {"validation_loss": validation_loss, "validation_perplexity": math.exp(validation_loss)}
            )
        on_metrics(step, metrics)
    model.eval()
    return {"final_train_loss": sum(recent) / len(recent), "final_validation_loss": validation_loss}
