"""Image transforms for vision training and evaluation without torchvision (absent on the CPU stack):
PIL for geometry, numpy for normalisation. Output: float32 [3, size, size] tensors, CLIP's mean/std."""

from __future__ import annotations

import dataclasses
import io
import math
import random
import warnings

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


# PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS); checked from the header, before any
# pixel is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """An image that cannot become RGB pixels; `reason` is a rejection reason a stage can count."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason  # empty_image, too_many_pixels or undecodable_image


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Any still or animated (first frame) image PIL reads, as 8-bit RGB: grayscale, palette, CMYK,
    16-bit and alpha images are converted; 16-bit samples are scaled, not clipped, to 8 bits."""
    if not data:
        raise ImageDecodeError("empty_image", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    "too_many_pixels", f"{width}x{height} px is above the limit of {max_pixels} px"
                )
            image.seek(0)
            image.load()
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("undecodable_image", "not an image format PIL knows") from None
    except Exception as err:  # PIL raises many types for bad bytes; all mean "not an image we can use"
        raise ImageDecodeError("undecodable_image", f"{type(err).__name__}: {err}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: PIL's convert("RGB") would clip everything above 255 to white.
        array = np.asarray(image, dtype=np.uint32 if image.mode == "I" else np.uint16)
        scale = 257.0 if image.mode != "I" or array.max() > 255 else 1.0
        image = Image.fromarray(np.clip(array / scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return image.convert("RGB")


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
