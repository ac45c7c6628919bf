"""The model train_vision trains: a vision tower (loaded by models.vision_tower) with the LLM2CLIP
adapter, and the image transform that tower needs."""

from __future__ import annotations

import torch

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from models.vision_tower import load_vision_tower
from ops.image_transforms import ImageTransformConfig
from pipelines.train_vision.config import TrainVisionConfig


def build_model(config: TrainVisionConfig, vision_model: str, llm_dim: int):
    """(LLM2CLIPModel, ImageTransformConfig) with the tower's weights and the adapter freshly initialised
    (seeded, so every worker starts identical)."""
    tower, mean, std = load_vision_tower(vision_model)
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
        logit_scale_init=config.logit_scale_init,
    )
    model = LLM2CLIPModel.with_vision_tower(model_config, tower)
    transform = ImageTransformConfig(
        size_px=int(tower.config.image_size), train_scale=tuple(config.train_crop_scale), mean=mean, std=std
    )
    return model, transform
