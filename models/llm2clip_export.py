"""The export folder of a trained LLM2CLIP model, written by train_vision and read by evaluate and users:
LLM2CLIPModel's safetensors and config, plus preprocessor_config.json with the eval-time image size and
normalisation (image_size, image_mean, image_std)."""

from __future__ import annotations

import json
from pathlib import Path

from models.llm2clip import LLM2CLIPModel
from models.vision_tower import PREPROCESSOR_FILE
from ops.image_transforms import ImageTransformConfig


def save_export(model: LLM2CLIPModel, transform: ImageTransformConfig, folder: str | Path) -> None:
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    preprocessor = {
        "image_size": transform.size_px,
        "image_mean": list(transform.mean),
        "image_std": list(transform.std),
    }
    (folder / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor, indent=2))


def load_export(folder: str | Path) -> tuple[LLM2CLIPModel, ImageTransformConfig]:
    """(model in eval mode, the transform its images need) from a local export folder."""
    folder = Path(folder)
    processor_file = folder / PREPROCESSOR_FILE
    if not processor_file.is_file():
        raise FileNotFoundError(f"{folder}: no {PREPROCESSOR_FILE}; not an LLM2CLIP export folder")
    processor = json.loads(processor_file.read_text())
    transform = ImageTransformConfig(
        size_px=int(processor["image_size"]),
        mean=tuple(processor["image_mean"]),
        std=tuple(processor["image_std"]),
    )
    return LLM2CLIPModel.from_pretrained(folder).eval(), transform
