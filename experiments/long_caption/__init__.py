"""The long_caption_experiment stage: LLM2CLIP against a base LLM and CLIP text towers on long captions,
in miniature, over several seeds."""

from experiments.long_caption.stage import STAGE

__all__ = ["STAGE"]
