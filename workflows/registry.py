"""The stages of the chain, in order. A recipe runs the ones it names a section for."""

from __future__ import annotations

from pipelines import (
    download,
    embed,
    evaluate,
    finetune_text,
    lm_pretrain,
    long_caption_experiment,
    recaption,
    scenes,
    tiny_models,
    train_vision,
)
from pipelines.base import StageSpec

# Order is the chain's order; each stage's inputs must come earlier.
CHAIN: tuple[StageSpec, ...] = (
    scenes.STAGE,
    tiny_models.STAGE,
    lm_pretrain.STAGE,
    download.STAGE,
    recaption.STAGE,
    finetune_text.STAGE,
    embed.STAGE,
    train_vision.STAGE,
    evaluate.STAGE,
    long_caption_experiment.STAGE,
)
STAGES: dict[str, StageSpec] = {spec.name: spec for spec in CHAIN}
