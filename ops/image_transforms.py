"""Image transforms for vision training and evaluation without torchvision (absent on the CPU stack):
PIL for geometry, numpy for normalisation. Output: float32 [3, size, size] tensors, CLIP's mean/std."""

from __future__ import annotations

import dataclasses
import io
import random

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ImageTransformConfig:
    size_px: int = 224  # output side
    train_scale: tuple[float, float] = (0.9, 1.0)  # random-resized-crop area range (train only)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


def decode_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _to_tensor(image: Image.Image, config: ImageTransformConfig) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(config.mean, dtype=np.float32)) / np.asarray(config.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def eval_transform(image: Image.Image, config: ImageTransformConfig) -> torch.Tensor:
    """Resize the short side to size_px (bicubic), centre-crop a square."""
    width, height = image.size
    scale = config.size_px / min(width, height)
    resized = image.resize(
        (max(config.size_px, round(width * scale)), max(config.size_px, round(height * scale))), Image.BICUBIC
    )
    left = (resized.width - config.size_px) // 2
    top = (resized.height - config.size_px) // 2
    return _to_tensor(resized.crop((left, top, left + config.size_px, top + config.size_px)), config)


def train_transform(image: Image.Image, config: ImageTransformConfig, rng: random.Random) -> torch.Tensor:
    """Random square crop covering train_scale of the area, resized to size_px (no flip: captions name
    left and right)."""
    width, height = image.size
    area = rng.uniform(*config.train_scale) * width * height
    side = max(1, min(round(area**0.5), width, height))
    left = rng.randint(0, width - side)
    top = rng.randint(0, height - side)
    crop = image.crop((left, top, left + side, top + side)).resize(
        (config.size_px, config.size_px), Image.BICUBIC
    )
    return _to_tensor(crop, config)
