"""The lm_pretrain stage: next-token pretraining of the tiny LLM that the long-caption experiment starts
from."""

from experiments.lm_pretrain.stage import STAGE

__all__ = ["STAGE"]
