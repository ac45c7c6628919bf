"""Retrieval metrics over embedding matrices."""

from __future__ import annotations

import torch


def caption_retrieval_accuracy(first: torch.Tensor, second: torch.Tensor) -> float:
    """CRA (LLM2CLIP, Table 1): caption i of the first set retrieves caption i of the second among all
    second captions; top-1 accuracy over cosine similarity. Ties count as misses unless i wins outright."""
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(
            f"expected two [n, d] matrices of one shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    first = torch.nn.functional.normalize(first.float(), dim=-1)
    second = torch.nn.functional.normalize(second.float(), dim=-1)
    similarity = first @ second.T
    positive = similarity.diagonal()
    others = similarity.clone()
    others.fill_diagonal_(float("-inf"))
    return (positive > others.max(dim=1).values).float().mean().item()
