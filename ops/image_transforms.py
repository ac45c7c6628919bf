"""Image transforms for vision training and evaluation without torchvision (absent on the CPU stack):
PIL for geometry, numpy for normalisation. Output: float32 [3, size, size] tensors, CLIP's mean/std."""

from __future__ import annotations

import dataclasses
import math
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


def _to_tensor(image: Image.Image, config: ImageTransformConfig) -> torch.Tensor:
    return normalize_pixels(_to_uint8(image), config.mean, config.std)


def _to_uint8(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)))


def normalize_pixels(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 CLIP input, on whatever device the tensor is: the training loader
    hands uint8 batches across processes and to the GPU (a quarter of float32's bytes) and the step
    normalises them there. The same float32 arithmetic as on the CPU, so the pixels are the same."""
    shape = (3, 1, 1)
    mean = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(shape)
    std = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(shape)
    return (pixels.to(torch.float32) / 255.0 - mean) / std


def eval_transform(image: Image.Image, config: ImageTransformConfig) -> torch.Tensor:
    """Resize the short side to size_px (bicubic), centre-crop a square: what CLIPImageProcessor does, to
    the bit (the long side is truncated, not rounded, as transformers sizes it), so an export's
    preprocessor_config.json reproduces the evaluation's pixels."""
    width, height = image.size
    scale = config.size_px / min(width, height)
    resized = image.resize(
        (max(config.size_px, int(width * scale)), max(config.size_px, int(height * scale))), Image.BICUBIC
    )
    left = (resized.width - config.size_px) // 2
    top = (resized.height - config.size_px) // 2
    return _to_tensor(resized.crop((left, top, left + config.size_px, top + config.size_px)), config)


TRAIN_CROP_RATIO = (3 / 4, 4 / 3)  # width / height range of a training crop (torchvision's, open_clip's)


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], rng: random.Random, ratio=TRAIN_CROP_RATIO
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) with the semantics of torchvision's RandomResizedCrop, which
    open_clip and EVA-CLIP train with: an area drawn from `scale` of the image's, an aspect ratio drawn
    log-uniformly from `ratio`, ten tries to fit inside the image, else the largest centred crop within
    `ratio`. On a 4:3 image, scale (0.9, 1) thus crops 90-100% of the area, not a square of the short side."""
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = rng.randint(0, height - crop_height)
            left = rng.randint(0, width - crop_width)
            return left, top, crop_width, crop_height
    image_ratio = width / height
    if image_ratio < ratio[0]:
        crop_width, crop_height = width, round(width / ratio[0])
    elif image_ratio > ratio[1]:
        crop_width, crop_height = round(height * ratio[1]), height
    else:
        crop_width, crop_height = width, height
    return (width - crop_width) // 2, (height - crop_height) // 2, crop_width, crop_height


def train_crop(image: Image.Image, config: ImageTransformConfig, rng: random.Random) -> torch.Tensor:
    """Random resized crop (random_resized_crop_box: train_scale of the area, aspect 3:4 to 4:3), resized
    to a size_px square (bicubic); no flip: captions name left and right. uint8 [3, size, size]: the
    step normalises it (normalize_pixels) on its device."""
    left, top, crop_width, crop_height = random_resized_crop_box(*image.size, config.train_scale, rng)
    crop = image.crop((left, top, left + crop_width, top + crop_height)).resize(
        (config.size_px, config.size_px), Image.BICUBIC
    )
    return _to_uint8(crop)


def train_transform(image: Image.Image, config: ImageTransformConfig, rng: random.Random) -> torch.Tensor:
    """train_crop, normalised: float32 [3, size, size]."""
    return normalize_pixels(train_crop(image, config, rng), config.mean, config.std)
