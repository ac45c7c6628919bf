"""The export folder train_vision writes and evaluate reads: weights and the image settings round-trip,
and the vision tower loads back by reference with its normalisation."""

from __future__ import annotations

import pytest
import torch

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from models.llm2clip_export import load_export, save_export
from models.tiny_factory import build_tiny_vision_tower
from models.tiny_specs import TinyVisionSpec
from models.vision_tower import load_vision_tower
from ops.image_transforms import CLIP_MEAN, ImageTransformConfig


def test_export_round_trips_model_and_transform(tmp_path):
    tower, _ = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    model = LLM2CLIPModel.with_vision_tower(
        LLM2CLIPConfig(llm_dim=16, adapter_width=8, adapter_depth=1, projection_dim=8), tower
    ).eval()
    transform = ImageTransformConfig(size_px=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    save_export(model, transform, tmp_path)
    loaded, loaded_transform = load_export(tmp_path)
    assert loaded_transform == ImageTransformConfig(size_px=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.get_image_features(pixels), model.get_image_features(pixels))
    # The vision tower folder alone loads by reference, with CLIP's normalisation where it names none.
    model.save_vision_tower(tmp_path / "tower")
    _, mean, _ = load_vision_tower(str(tmp_path / "tower"))
    assert mean == CLIP_MEAN


def test_a_folder_without_image_settings_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an LLM2CLIP export folder"):
        load_export(tmp_path)
