"""Vision towers by reference: an HF id or folder (CLIP or SigLIP vision model, with the normalisation its
preprocessor_config.json gives), an object-store folder, or "timm:<name>" for a timm tower (EVA02 etc.)."""

from __future__ import annotations

import json
from pathlib import Path

from models.timm_tower import TIMM_PREFIX, TimmVisionTower
from ops.image_transforms import CLIP_MEAN, CLIP_STD
from ops.model_files import local_model

PREPROCESSOR_FILE = "preprocessor_config.json"


def image_normalisation(folder: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from a model folder's preprocessor_config.json, CLIP's where it has none."""
    mean, std = CLIP_MEAN, CLIP_STD
    processor_file = Path(folder) / PREPROCESSOR_FILE
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean = tuple(processor.get("image_mean", mean))
        std = tuple(processor.get("image_std", std))
    return mean, std


def load_vision_tower(vision_model: str):
    """(tower, mean, std). Weights only from safetensors; timm towers with timm's pretrained weights
    (GPU profile: timm needs torchvision)."""
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    if vision_model.startswith(TIMM_PREFIX):
        tower = TimmVisionTower.from_timm(vision_model.removeprefix(TIMM_PREFIX), pretrained=True)
        return tower, tuple(tower.config.image_mean), tuple(tower.config.image_std)

    # Object-store folders are staged locally; HF ids and local folders load as they are.
    with local_model(vision_model) as source:
        config = AutoConfig.from_pretrained(source)
        tower_cls = SiglipVisionModel if "siglip" in config.model_type else CLIPVisionModel
        tower = tower_cls.from_pretrained(source, use_safetensors=True)
        mean, std = image_normalisation(source)
    return tower, mean, std
