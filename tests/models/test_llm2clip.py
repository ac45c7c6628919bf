"""The LLM2CLIP model: shapes, the clamped logit scale, and the exported folders round-trip."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPVisionModel

from models.llm2clip import MAX_LOGIT_SCALE, LLM2CLIPConfig, LLM2CLIPModel
from models.tiny_factory import build_tiny_vision_tower
from models.tiny_specs import TinyVisionSpec


@pytest.fixture(scope="module")
def model() -> LLM2CLIPModel:
    tower, _ = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    config = LLM2CLIPConfig(llm_dim=128, adapter_width=32, adapter_depth=2, projection_dim=24)
    return LLM2CLIPModel.with_vision_tower(config, tower).eval()


def test_features_have_the_shared_dimension_and_unit_norm(model):
    pixels = torch.randn(3, 3, 64, 64)
    llm = torch.randn(3, 128)
    assert model.get_image_features(pixels).shape == (3, 24) and model.get_text_features(llm).shape == (3, 24)
    out = model(pixel_values=pixels, llm_embeddings=llm)
    assert torch.allclose(out["image_embeds"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["text_embeds"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert math.isclose(out["logit_scale"].item(), 1 / 0.07, rel_tol=1e-5)
    # The adapter normalises its input: the LLM features' scale does not matter.
    assert torch.allclose(model.get_text_features(llm), model.get_text_features(7 * llm), atol=1e-5)


def test_logit_scale_is_clamped():
    config = LLM2CLIPConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        llm_dim=8,
        adapter_width=8,
        adapter_depth=1,
        projection_dim=8,
        logit_scale_init=math.log(1000.0),
    )
    assert LLM2CLIPModel(config).clamped_logit_scale().item() == MAX_LOGIT_SCALE


def test_export_round_trips_and_the_vision_tower_loads_alone(model, tmp_path):
    pixels = torch.randn(2, 3, 64, 64)
    llm = torch.randn(2, 128)
    model.save_pretrained(tmp_path / "llm2clip")
    assert (tmp_path / "llm2clip" / "model.safetensors").is_file()
    loaded = LLM2CLIPModel.from_pretrained(tmp_path / "llm2clip").eval()
    with torch.no_grad():
        assert torch.allclose(loaded.get_image_features(pixels), model.get_image_features(pixels), atol=1e-6)
        assert torch.allclose(loaded.get_text_features(llm), model.get_text_features(llm), atol=1e-6)
    model.save_vision_tower(tmp_path / "vision")
    tower = CLIPVisionModel.from_pretrained(tmp_path / "vision", use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.allclose(
            tower(pixel_values=pixels).pooler_output,
            model.vision_model(pixel_values=pixels).pooler_output,
            atol=1e-6,
        )


def test_unknown_vision_tower_type_is_refused():
    with pytest.raises(ValueError, match=r"vision_config\.model_type"):
        LLM2CLIPConfig(vision_config={"model_type": "resnet"})
