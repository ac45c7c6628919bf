"""The learning-rate schedule every training loop here uses: linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math

import torch


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """The lr multiplier at an optimizer step: (step + 1) / warmup during warm-up, then a half cosine
    from 1 to 0 over the remaining total - warmup steps, and 0 after."""
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine_scheduler(
    optimizer, warmup_steps: int, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure, not a callable object: LambdaLR's state_dict then holds no schedule state of its own.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, warmup_steps, max_steps)
    )
