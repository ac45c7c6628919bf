"""The model train_vision trains: a vision tower (loaded by models.vision_tower) with the LLM2CLIP
adapter, and the image transform that tower needs."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from models.llm2clip import MAX_LOGIT_SCALE, LLM2CLIPConfig, LLM2CLIPModel
from models.timm_tower import TIMM_PREFIX
from models.vision_tower import checkpoint_logit_scale, load_vision_tower_and_logit_scale
from ops.image_transforms import ImageTransformConfig
from pipelines.train_vision.config import TrainVisionConfig


def starting_logit_scale(
    config: TrainVisionConfig, vision_model: str, pretrained: float | None
) -> tuple[float, str]:
    """(the logit scale training starts from, where it comes from): the pretrained checkpoint's own
    (`pretrained`, OpenAI CLIP's is ln 100) when it has one, else the recipe's logit_scale_init. A
    fine-tuning run at lr 1e-5 barely moves it, so the start is the temperature the whole run trains at."""
    if pretrained is not None:
        return min(pretrained, math.log(MAX_LOGIT_SCALE)), f"{vision_model}'s checkpoint"
    return config.logit_scale_init, "train_vision.logit_scale_init"


def logit_scale_plan(config: TrainVisionConfig) -> str:
    """The dry-run's line on the starting temperature, without loading a model (a hub checkpoint not in
    the local cache cannot be read then, and the line says what the run will do)."""
    recipe = f"train_vision.logit_scale_init = {config.logit_scale_init:.4f}"
    reference = config.vision_model
    readable = reference and not reference.startswith(TIMM_PREFIX) and "://" not in reference
    scale = checkpoint_logit_scale(reference, cached_only=True) if readable else None
    if scale is not None:
        scale = min(scale, math.log(MAX_LOGIT_SCALE))
        return f"logit scale starts at {scale:.4f} (x{math.exp(scale):.1f}), from {reference}'s checkpoint"
    if not readable or Path(reference).is_dir():
        how = reference or "the tiny tower"
        return f"logit scale starts at {recipe} (x{math.exp(config.logit_scale_init):.1f}; {how} has none)"
    return (
        f"logit scale starts at {reference}'s own if its checkpoint has one (OpenAI CLIP: ln 100 = 4.6052), "
        f"else {recipe}; clamped at ln 100 after every step"
    )


def build_model(config: TrainVisionConfig, vision_model: str, llm_dim: int):
    """(LLM2CLIPModel, ImageTransformConfig) with the tower's weights and the adapter freshly initialised
    (seeded, so every worker starts identical); the logit scale from starting_logit_scale."""
    tower, mean, std, pretrained = load_vision_tower_and_logit_scale(vision_model)
    logit_scale, _ = starting_logit_scale(config, vision_model, pretrained)
    torch.manual_seed(config.seed)
    model_config = LLM2CLIPConfig(
        llm_dim=llm_dim,
        adapter_width=config.adapter_width,
        adapter_depth=config.adapter_depth,
        projection_dim=config.projection_dim,
        adapter_dropout=config.adapter_dropout,
        adapter_expansion=config.adapter_expansion,
        adapter_input_projection=config.adapter_input_projection,
        adapter_output_bias=config.adapter_output_bias,
        logit_scale_init=logit_scale,
    )
    model = LLM2CLIPModel.with_vision_tower(model_config, tower)
    transform = ImageTransformConfig(
        size_px=int(tower.config.image_size), train_scale=tuple(config.train_crop_scale), mean=mean, std=std
    )
    return model, transform
