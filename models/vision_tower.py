"""Vision towers by reference: an HF id or folder (CLIP or SigLIP vision model, with the normalisation its
preprocessor_config.json gives), an object-store folder, or "timm:<name>" for a timm tower (EVA02 etc.)."""

from __future__ import annotations

import json
from pathlib import Path

from models.timm_tower import TIMM_PREFIX, TimmVisionTower
from ops.image_transforms import CLIP_MEAN, CLIP_STD
from ops.model_files import local_model

PREPROCESSOR_FILE = "preprocessor_config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
LOGIT_SCALE_WEIGHT = "logit_scale"  # a full CLIPModel / SiglipModel checkpoint's learned temperature


def image_normalisation(folder: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from a model folder's preprocessor_config.json, CLIP's where it has none."""
    mean, std = CLIP_MEAN, CLIP_STD
    processor_file = Path(folder) / PREPROCESSOR_FILE
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean = tuple(processor.get("image_mean", mean))
        std = tuple(processor.get("image_std", std))
    return mean, std


def _checkpoint_file(source: str, name: str, cached_only: bool = False) -> str | None:
    """A file of a local folder or a hub id (from the hub cache, else fetched unless cached_only); None
    if absent."""
    local = Path(source) / name
    if Path(source).is_dir():
        return str(local) if local.is_file() else None
    from transformers.utils import cached_file

    return cached_file(
        source,
        name,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        local_files_only=cached_only,
    )


def checkpoint_logit_scale(source: str, cached_only: bool = False) -> float | None:
    """The logit scale (ln of CLIP's 1 / temperature) that a full CLIP checkpoint carries beside its
    vision tower: ln 100 in OpenAI's CLIP models. Read from the safetensors header and one tensor, without
    loading the model; None for a vision-only checkpoint, which has no temperature of its own."""
    from safetensors import safe_open

    weights = _checkpoint_file(source, SAFETENSORS_FILE, cached_only)
    index = None if weights else _checkpoint_file(source, SAFETENSORS_INDEX, cached_only)
    if index is not None:
        shard = json.loads(Path(index).read_text()).get("weight_map", {}).get(LOGIT_SCALE_WEIGHT)
        weights = _checkpoint_file(source, shard, cached_only) if shard else None
    if weights is None:
        return None
    with safe_open(weights, framework="pt") as handle:
        if LOGIT_SCALE_WEIGHT not in handle.keys():  # noqa: SIM118 (safe_open is no mapping)
            return None
        return float(handle.get_tensor(LOGIT_SCALE_WEIGHT).float().reshape(-1)[0])


def load_vision_tower(vision_model: str):
    """(tower, mean, std). Weights only from safetensors; timm towers with timm's pretrained weights
    (GPU profile: timm needs torchvision)."""
    tower, mean, std, _ = load_vision_tower_and_logit_scale(vision_model)
    return tower, mean, std


def load_vision_tower_and_logit_scale(vision_model: str):
    """(tower, mean, std, the checkpoint's logit scale or None), from one staging of the folder: an
    object-store folder is copied to this node once; HF ids and local folders load as they are. timm's
    towers carry no logit scale."""
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    if vision_model.startswith(TIMM_PREFIX):
        tower = TimmVisionTower.from_timm(vision_model.removeprefix(TIMM_PREFIX), pretrained=True)
        return tower, tuple(tower.config.image_mean), tuple(tower.config.image_std), None

    with local_model(vision_model) as source:
        config = AutoConfig.from_pretrained(source)
        tower_cls = SiglipVisionModel if "siglip" in config.model_type else CLIPVisionModel
        tower = tower_cls.from_pretrained(source, use_safetensors=True)
        mean, std = image_normalisation(source)
        logit_scale = checkpoint_logit_scale(source)  # from the files just read: no second download
    return tower, mean, std, logit_scale
