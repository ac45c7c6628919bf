"""train_vision's GPU options run the same step: fused AdamW gives the plain optimizer's update to float
rounding, and in-place compilation keeps the parameter names that checkpoints and the export use."""

from __future__ import annotations

import itertools

import torch

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from pipelines.train_vision.loop import VisionLoopSettings, build_optimizer, train_steps

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 16,
}


def _model() -> LLM2CLIPModel:
    torch.manual_seed(0)
    config = LLM2CLIPConfig(
        vision_config=VISION, llm_dim=16, adapter_width=16, adapter_depth=1, projection_dim=8
    )
    return LLM2CLIPModel(config)


def _trained(fused: bool) -> dict[str, torch.Tensor]:
    model = _model()
    settings = VisionLoopSettings(1e-2, 0.05, 1, 3, 1.0, layer_decay=0.9, fused_adamw=fused)
    optimizer, scheduler = build_optimizer(model, settings)
    torch.manual_seed(1)
    batch = (torch.randn(4, 3, 32, 32), torch.randn(4, 16))
    train_steps(
        model,
        itertools.repeat(batch, 3),
        settings,
        optimizer,
        scheduler,
        0,
        lambda s, m: None,
        torch.device("cpu"),
    )
    return model.state_dict()


def test_fused_adamw_takes_the_plain_optimizers_steps():
    plain, fused = _trained(False), _trained(True)
    assert plain.keys() == fused.keys()
    # Attention's key bias is left out: softmax ignores a shift shared by every key, so its true gradient
    # is zero and Adam's update there (m / sqrt(v) of rounding noise) is +-lr either way.
    compared = [k for k in plain if not k.endswith("k_proj.bias")]
    assert len(compared) > 20
    assert all(torch.allclose(plain[k], fused[k], atol=1e-5) for k in compared)
    assert not all(torch.equal(plain[k], _model().state_dict()[k]) for k in plain)  # it did train


def test_compiling_in_place_keeps_parameter_names():
    model = _model()
    names = list(model.state_dict())
    model.compile()
    assert list(model.state_dict()) == names
