"""The temperature a paper-scale run trains at: the logit scale starts from the pretrained CLIP
checkpoint's own (ln 100 in OpenAI's), else the recipe's value, and the parameter itself never passes
ln 100, as open_clip and the LLM2CLIP release clamp it after every step."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from models.vision_tower import checkpoint_logit_scale
from pipelines.train_vision.config import TrainVisionConfig
from pipelines.train_vision.loop import (
    VisionLoopSettings,
    build_optimizer,
    to_training_precision,
    train_steps,
)
from pipelines.train_vision.model import build_model, logit_scale_plan, starting_logit_scale
from tests.pipelines.train_vision.test_gpu_options import VISION  # the same tiny tower

LN_100 = math.log(100)


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """A full CLIP checkpoint (vision + text + logit_scale = ln 100) and a vision-only one."""
    root = tmp_path_factory.mktemp("towers")
    torch.manual_seed(0)
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 99,
        "max_position_embeddings": 16,
    }
    clip = CLIPModel(
        CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16, logit_scale_init_value=LN_100)
    )
    clip.save_pretrained(root / "clip", safe_serialization=True)
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(root / "vision", safe_serialization=True)
    return str(root / "clip"), str(root / "vision")


def test_the_pretrained_checkpoints_own_scale_wins_over_the_recipes(towers):
    clip, vision_only = towers
    config = TrainVisionConfig(adapter_width=16, adapter_depth=1, projection_dim=16, logit_scale_init=1.0)
    assert (
        checkpoint_logit_scale(clip) == pytest.approx(LN_100) and checkpoint_logit_scale(vision_only) is None
    )
    assert starting_logit_scale(config, clip, checkpoint_logit_scale(clip)) == (
        pytest.approx(LN_100),
        f"{clip}'s checkpoint",
    )
    assert starting_logit_scale(config, vision_only, None) == (1.0, "train_vision.logit_scale_init")
    model, _ = build_model(config, clip, llm_dim=24)
    assert model.logit_scale.item() == pytest.approx(LN_100, abs=1e-6)
    # the dry-run says so, without loading a model
    assert "starts at 4.6052 (x100.0)" in logit_scale_plan(
        TrainVisionConfig(vision_model=clip, logit_scale_init=1.0)
    )
    assert "starts at train_vision.logit_scale_init = 1.0000" in logit_scale_plan(
        TrainVisionConfig(vision_model=vision_only, logit_scale_init=1.0)
    )


@pytest.mark.parametrize("bf16_weights", [False, True])
def test_the_parameter_never_passes_ln_100(bf16_weights):
    """Started above the clamp (as a checkpoint trained without one would be), the parameter is back at
    ln 100 after the first step and stays at or below it: Adam alone moves it by about the lr a step."""
    torch.manual_seed(0)
    config = LLM2CLIPConfig(
        vision_config=CLIPVisionConfig(**VISION).to_dict(),
        llm_dim=24,
        adapter_width=16,
        adapter_depth=1,
        projection_dim=16,
    )
    model = LLM2CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(LN_100 + 0.5)
    settings = VisionLoopSettings(
        learning_rate=0.01,
        weight_decay=0.0,
        warmup_steps=0,
        max_steps=6,
        max_grad_norm=100.0,
        bf16_weights=bf16_weights,
    )
    master = to_training_precision(model, settings)
    optimizer, scheduler = build_optimizer(model, settings, master)
    seen = []

    def on_step(step, metrics):
        trained = dict(master.named_parameters())["logit_scale"] if master else model.logit_scale
        seen.append((trained.item(), model.logit_scale.float().item()))

    batches = iter([(torch.randn(4, 3, 32, 32), torch.randn(4, 24))] * 6)
    train_steps(model, batches, settings, optimizer, scheduler, 0, on_step, torch.device("cpu"), None, master)
    assert len(seen) == 6
    assert seen[0][0] == pytest.approx(LN_100)
    assert all(trained <= LN_100 + 1e-6 for trained, _ in seen), seen  # ln 100 in fp32
    assert all(held <= LN_100 + 0.02 for _, held in seen), seen  # bf16 rounds ln 100 to 4.5938 or 4.625
