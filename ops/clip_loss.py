"""Symmetric CLIP InfoNCE between image and text features, with features gathered across workers.

Each worker scores its local rows against every worker's rows ("local loss plus gather"): the mean of
the workers' losses equals the single-process loss on the global batch, at 1/world of the logits memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(
    image_local: torch.Tensor,
    text_local: torch.Tensor,
    logit_scale: torch.Tensor,
    image_all: torch.Tensor | None = None,
    text_all: torch.Tensor | None = None,
    labels_offset: int = 0,
) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy. Features are L2-normalised; *_all are the
    gathered features of every worker (default: the local ones), local row i matches row offset + i."""
    image_all = image_local if image_all is None else image_all
    text_all = text_local if text_all is None else text_all
    labels = torch.arange(image_local.shape[0], device=image_local.device) + labels_offset
    image_to_text = logit_scale * image_local @ text_all.T
    text_to_image = logit_scale * text_local @ image_all.T
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2
