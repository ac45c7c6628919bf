from __future__ import annotations

import math

import pytest
import torch

from ops.contrastive import info_nce_loss
from ops.retrieval_metrics import caption_retrieval_accuracy


def _reference(queries, keys, temperature, hard=None, offset=0):
    """The loss written out row by row: -log softmax of the positive."""
    candidates = keys if hard is None else torch.cat([keys, hard])
    total = 0.0
    for i, q in enumerate(queries):
        scores = [float(q @ c) / temperature for c in candidates]
        top = max(scores)
        log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
        total += log_norm - scores[offset + i]
    return total / len(queries)


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("temperature", [0.02, 0.05, 1.0])
def test_info_nce_matches_the_reference(temperature):
    torch.manual_seed(0)
    q, k, hard = _unit(6, 16), _unit(6, 16), _unit(6, 16)
    assert info_nce_loss(q, k, temperature).item() == pytest.approx(_reference(q, k, temperature), rel=1e-9)
    got = info_nce_loss(q, k, temperature, hard_negatives=hard).item()
    assert got == pytest.approx(_reference(q, k, temperature, hard), rel=1e-9)


def test_labels_offset_for_gathered_keys():
    torch.manual_seed(1)
    keys = _unit(12, 8)  # as if gathered from 3 workers of 4
    local_queries = _unit(4, 8)
    got = info_nce_loss(local_queries, keys, 0.05, labels_offset=4).item()
    assert got == pytest.approx(_reference(local_queries, keys, 0.05, offset=4), rel=1e-9)


def test_loss_is_low_for_matched_pairs_and_high_for_shuffled():
    torch.manual_seed(2)
    q = _unit(8, 32)
    assert info_nce_loss(q, q, 0.02) < 0.01
    assert info_nce_loss(q, q.roll(1, dims=0), 0.02) > 5


def test_caption_retrieval_accuracy():
    eye = torch.eye(4)
    assert caption_retrieval_accuracy(eye, eye) == 1.0
    assert caption_retrieval_accuracy(eye, eye.roll(1, dims=0)) == 0.0
    # One of three pairs swapped: 1/3; ties (identical second captions) are misses.
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    second = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.7, 0.7]])
    assert caption_retrieval_accuracy(first, second) == pytest.approx(1 / 3)
    tied = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert caption_retrieval_accuracy(tied, tied) == 0.0
    with pytest.raises(ValueError, match="two \\[n, d\\] matrices"):
        caption_retrieval_accuracy(torch.zeros(3, 2), torch.zeros(2, 2))


def test_scores_are_cosine_whatever_the_features_norm():
    """The llm2vec pooling gives unnormalised features; LLM2Vec's loss compares them by cosine."""
    import torch.nn.functional as F

    from ops.contrastive import info_nce_loss

    generator = torch.Generator().manual_seed(0)
    queries, keys, negatives = (torch.randn(6, 16, generator=generator) * 7 for _ in range(3))
    unit = info_nce_loss(
        F.normalize(queries, dim=-1), F.normalize(keys, dim=-1), 0.05, F.normalize(negatives, dim=-1)
    )
    assert info_nce_loss(queries, keys, 0.05, negatives).item() == pytest.approx(unit.item(), abs=1e-5)
    cosine = F.cosine_similarity(queries[:, None], torch.cat([keys, negatives])[None], dim=-1)
    reference = F.cross_entropy(cosine / 0.05, torch.arange(6))
    assert unit.item() == pytest.approx(reference.item(), abs=1e-5)
