"""Recall@k for image-text retrieval: exact on hand-made cases, at chance on noise."""

from __future__ import annotations

import torch

from ops.retrieval_metrics import image_text_recalls, recall_at_k


def test_recall_at_k_on_a_hand_made_case():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 1.0]])
    # q0 -> t0 first; q1 -> t1 ranks behind t2 (second); q2 -> t2 first.
    recalls = recall_at_k(queries, targets, (1, 2))
    assert abs(recalls[1] - 2 / 3) < 1e-6 and recalls[2] == 1.0


def test_identical_features_recall_everything_and_noise_is_near_chance():
    torch.manual_seed(0)
    features = torch.randn(50, 32)
    metrics = image_text_recalls(features, features)
    assert metrics["i2t_r1"] == metrics["t2i_r1"] == 1.0
    noise = image_text_recalls(torch.randn(400, 32), torch.randn(400, 32), ks=(10,))
    assert abs(noise["i2t_r10"] - 10 / 400) < 0.03
