"""Image transforms without torchvision: shapes, normalisation, crops that stay inside the image."""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image

from ops.image_decode import decode_rgb
from ops.image_transforms import ImageTransformConfig, eval_transform, train_transform


def _png(width: int, height: int, colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_eval_transform_crops_a_normalised_square():
    config = ImageTransformConfig(size_px=32)
    tensor = eval_transform(decode_rgb(_png(80, 40)), config)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    expected = (np.array([1.0, 0.0, 0.0]) - np.array(config.mean)) / np.array(config.std)
    assert np.allclose(tensor.mean(dim=(1, 2)).numpy(), expected, atol=1e-3)


def test_train_transform_is_seeded_and_differs_between_draws():
    config = ImageTransformConfig(size_px=16, train_scale=(0.3, 0.5))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    first = train_transform(image, config, random.Random(1))
    assert torch.equal(first, train_transform(image, config, random.Random(1)))
    assert not torch.equal(first, train_transform(image, config, random.Random(2)))
    assert first.shape == (3, 16, 16)


def test_eval_transform_makes_the_pixels_clip_image_processor_makes():
    from transformers import CLIPImageProcessor

    from models.llm2clip_export import clip_image_processor

    config = ImageTransformConfig(size_px=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    settings = {k: v for k, v in clip_image_processor(config).items() if k != "image_processor_type"}
    processor = CLIPImageProcessor(**settings)
    rng = np.random.default_rng(0)
    for height, width in [(32, 32), (40, 48), (48, 40), (41, 97), (33, 100), (150, 32), (25, 35)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = processor(images=image, return_tensors="pt").pixel_values[0]
        assert torch.equal(eval_transform(image, config), expected), (height, width)


def test_train_crop_keeps_the_scale_on_a_non_square_image():
    """RandomResizedCrop's semantics: on a 4:3 image, scale (0.9, 1) covers 90-100% of the area (a square
    of the short side would cover at most 75%), within aspect 3:4..4:3, inside the image."""
    from ops.image_transforms import random_resized_crop_box

    rng = random.Random(0)
    widths = []
    for _ in range(500):
        left, top, width, height = random_resized_crop_box(400, 300, (0.9, 1.0), rng)
        assert left >= 0 and left + width <= 400 and top >= 0 and top + height <= 300
        assert 0.895 <= width * height / (400 * 300) <= 1.0
        assert 3 / 4 - 0.01 <= width / height <= 4 / 3 + 0.01
        widths.append(width)
    assert min(widths) > 300  # never the short side's square


def test_train_crop_falls_back_to_a_centred_crop_within_the_ratio():
    from ops.image_transforms import random_resized_crop_box

    # 4:1 panorama: no 90% crop fits within 4:3, so the centred 4:3 crop of full height
    assert random_resized_crop_box(400, 100, (0.9, 1.0), random.Random(0)) == (133, 0, 133, 100)
