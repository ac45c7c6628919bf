"""The stages a recipe can name, as three chains: the production stages, the demo stages that stand in
for downloads on a CPU machine, and the experiments. A recipe runs the ones it names a section for.

Stage packages keep their __init__ free of imports, so that a part (a loop, a config) imports without
the stage's own dependencies; the stages are taken from their stage.py here."""

from __future__ import annotations

from demo import tiny_models
from demo.scenes import stage as scenes
from experiments.lm_pretrain import stage as lm_pretrain
from experiments.long_caption import stage as long_caption
from ops.stage import StageSpec
from pipelines.download import stage as download
from pipelines.embed import stage as embed
from pipelines.evaluate import stage as evaluate
from pipelines.finetune_text import stage as finetune_text
from pipelines.recaption import stage as recaption
from pipelines.train_vision import stage as train_vision

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
DEMO: tuple[StageSpec, ...] = (scenes.STAGE, tiny_models.STAGE)
# Experiments: lm_pretrain feeds finetune_text a base LLM; long_caption_experiment reads the chain's output.
EXPERIMENT_SOURCES: tuple[StageSpec, ...] = (lm_pretrain.STAGE,)
EXPERIMENTS: tuple[StageSpec, ...] = (long_caption.STAGE,)

# The order a plan runs them in; each stage's inputs come earlier.
CHAIN: tuple[StageSpec, ...] = DEMO + EXPERIMENT_SOURCES + PRODUCTION + EXPERIMENTS
STAGES: dict[str, StageSpec] = {spec.name: spec for spec in CHAIN}
