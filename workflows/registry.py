"""The stages a recipe can name, as three chains: the production stages, the demo stages that stand in
for downloads on a CPU machine, and the experiments. A recipe runs the ones it names a section for."""

from __future__ import annotations

import demo.scenes
from demo import tiny_models
from experiments import lm_pretrain, long_caption
from ops.stage import StageSpec
from pipelines import download, embed, evaluate, finetune_text, recaption, train_vision

# The production chain: what a real run is made of.
PRODUCTION: tuple[StageSpec, ...] = (
    download.STAGE,
    recaption.STAGE,
    finetune_text.STAGE,
    embed.STAGE,
    train_vision.STAGE,
    evaluate.STAGE,
)
# Generated scenes and tiny models: the data and weights the production stages read where nothing can be
# downloaded.
DEMO: tuple[StageSpec, ...] = (demo.scenes.STAGE, tiny_models.STAGE)
# Experiments: lm_pretrain feeds finetune_text a base LLM; long_caption_experiment reads the chain's output.
EXPERIMENT_SOURCES: tuple[StageSpec, ...] = (lm_pretrain.STAGE,)
EXPERIMENTS: tuple[StageSpec, ...] = (long_caption.STAGE,)

# The order a plan runs them in; each stage's inputs come earlier.
CHAIN: tuple[StageSpec, ...] = DEMO + EXPERIMENT_SOURCES + PRODUCTION + EXPERIMENTS
STAGES: dict[str, StageSpec] = {spec.name: spec for spec in CHAIN}
