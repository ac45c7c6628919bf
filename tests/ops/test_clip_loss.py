"""The gathered CLIP loss: averaged over simulated workers, it equals the loss on the global batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ops.clip_loss import clip_loss


def _reference(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    logits = scale * image @ text.T
    labels = torch.arange(len(image))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_local_losses_against_gathered_features_average_to_the_global_loss():
    torch.manual_seed(0)
    image = F.normalize(torch.randn(12, 16), dim=-1)
    text = F.normalize(torch.randn(12, 16), dim=-1)
    scale = torch.tensor(20.0)
    world, local = 3, 4
    per_worker = [
        clip_loss(
            image[r * local : (r + 1) * local],
            text[r * local : (r + 1) * local],
            scale,
            image,
            text,
            r * local,
        )
        for r in range(world)
    ]
    assert torch.allclose(sum(per_worker) / world, _reference(image, text, 20.0), atol=1e-6)
    assert torch.allclose(clip_loss(image, text, scale), _reference(image, text, 20.0), atol=1e-6)


def test_matching_pairs_score_low_and_random_pairs_near_chance():
    torch.manual_seed(0)
    features = F.normalize(torch.randn(32, 64), dim=-1)
    assert clip_loss(features, features, torch.tensor(100.0)).item() < 0.01
    noise = F.normalize(torch.randn(32, 64), dim=-1)
    assert abs(clip_loss(features, noise, torch.tensor(1.0)).item() - math.log(32)) < 0.1
