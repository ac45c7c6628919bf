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
    Scores are cosine similarities, as LLM2Vec's loss takes them: the inputs are L2-normalised here (the
    "mean" pooling's already are; the "llm2vec" pooling's are not). Temperature 0.02 is LLM2CLIP's scale
    of 50."""
    queries, keys = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    logits = queries @ keys.T
    if hard_negatives is not None:
        logits = torch.cat([logits, queries @ F.normalize(hard_negatives, dim=-1).T], dim=1)
    labels = torch.arange(queries.shape[0], device=queries.device) + labels_offset
    return F.cross_entropy(logits / temperature, labels)
