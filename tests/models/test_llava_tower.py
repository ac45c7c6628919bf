"""train_vision's vision_tower/ folder is a LLaVA vision tower: a tiny LlavaForConditionalGeneration whose
config takes the tower's config from that folder, with the tower's weights, runs a forward pass on an
image, and the features it projects are the exported tower's own hidden states."""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from models.tiny_factory import build_tiny_vision_tower
from models.tiny_specs import TinyVisionSpec

IMAGE_TOKEN = 31  # the tiny language model's image placeholder id


def test_the_exported_vision_tower_runs_inside_llava(tmp_path):
    tower, _ = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    model = LLM2CLIPModel.with_vision_tower(
        LLM2CLIPConfig(llm_dim=16, adapter_width=16, adapter_depth=1, projection_dim=8), tower
    )
    model.save_vision_tower(tmp_path / "vision_tower")

    vision_config = CLIPVisionConfig.from_pretrained(tmp_path / "vision_tower")
    text_config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-2,  # LLaVA-1.5's choice: the penultimate layer, CLS dropped
        vision_feature_select_strategy="default",
    )
    llava = LlavaForConditionalGeneration(config).eval()
    exported = CLIPVisionModel.from_pretrained(tmp_path / "vision_tower", use_safetensors=True).eval()
    llava.model.vision_tower.load_state_dict(exported.state_dict(), strict=True)  # every key, nothing left

    size = vision_config.image_size
    patches = (size // vision_config.patch_size) ** 2
    pixels = torch.randn(1, 3, size, size)
    input_ids = torch.tensor([[1, *([IMAGE_TOKEN] * patches), 5, 6, 7]])
    with torch.no_grad():
        out = llava(input_ids=input_ids, pixel_values=pixels, attention_mask=torch.ones_like(input_ids))
        hidden = exported(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        projected = llava.model.multi_modal_projector(hidden)
        features = llava.model.get_image_features(
            pixel_values=pixels, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )
    assert out.logits.shape == (1, input_ids.shape[1], text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    # transformers 5 returns the projected features as the output's pooler_output (4: the tensor itself)
    features = getattr(features, "pooler_output", features)
    features = features[0] if isinstance(features, (list, tuple)) else features
    torch.testing.assert_close(features.reshape(projected.shape), projected)
