"""EVA02-style timm towers inside the LLM2CLIP model. timm needs torchvision, which the CPU stack cannot
have: these run on the GPU profile (and on the device machine) and are skipped elsewhere."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm needs torchvision: GPU profile only")

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel  # noqa: E402
from models.timm_tower import TimmVisionTower  # noqa: E402
from pipelines.train_vision.loop import VisionLoopSettings, build_optimizer  # noqa: E402


def test_eva02_tower_round_trips_and_gets_layer_decay(tmp_path):
    tower = TimmVisionTower.from_timm("eva02_tiny_patch14_224", pretrained=False, image_size=56)
    config = LLM2CLIPConfig(llm_dim=32, adapter_width=16, adapter_depth=1, projection_dim=8)
    model = LLM2CLIPModel.with_vision_tower(config, tower).eval()
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        features = model.get_image_features(pixels)
    assert features.shape == (2, 8)
    model.save_pretrained(tmp_path / "export")
    loaded = LLM2CLIPModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        assert torch.allclose(loaded.get_image_features(pixels), features, atol=1e-5)
    optimizer, _ = build_optimizer(model, VisionLoopSettings(1e-3, 0.0, 0, 10, 1.0, layer_decay=0.8))
    assert len({group["lr"] for group in optimizer.param_groups}) > 3  # blocks get decayed rates
