"""InfoNCE over caption pairs with in-batch (and optional hard) negatives, as in LLM2Vec / LLM2CLIP."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_loss(
    queries: torch.Tensor,
    keys: torch.Tensor,
    temperature: float,
    hard_negatives: torch.Tensor | None = None,
    labels_offset: int = 0,
) -> torch.Tensor:
    """Mean cross-entropy of each query against all keys (plus hard negatives); query i's positive is
    key labels_offset + i. With keys gathered from every worker, labels_offset is rank * local batch.
    Inputs are L2-normalised embeddings; temperature 0.02 is LLM2CLIP's scale of 50."""
    logits = queries @ keys.T
    if hard_negatives is not None:
        logits = torch.cat([logits, queries @ hard_negatives.T], dim=1)
    labels = torch.arange(queries.shape[0], device=queries.device) + labels_offset
    return F.cross_entropy(logits / temperature, labels)
