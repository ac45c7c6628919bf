"""The long-caption arms on a few random images: the text towers' short/long split changes no feature,
and the (arm, seed) runs give the same rows as Ray tasks as they do in this process."""

from __future__ import annotations

import pytest
import torch

from experiments.long_caption.arms import ArmSettings, CaptionedImages, build_arm, run_one, text_features
from models.text_tower_clip import TextTowerSpec, tokenize_for_clip
from models.tiny_factory import build_tiny_vision_tower, train_scene_tokenizer
from models.tiny_specs import TinyVisionSpec

WORDS = ("red", "blue", "green", "cube", "ball", "cone", "left", "of", "right", "above", "below", "the")


def _captions(count: int, longest: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, longest, (count,), generator=generator)
    return [
        " ".join(WORDS[i] for i in torch.randint(len(WORDS), (int(n),), generator=generator)) for n in lengths
    ]


@pytest.fixture(scope="module")
def tiny_setup():
    tokenizer = train_scene_tokenizer(_captions(64, 30, 0), vocab_size=300)
    tower, _ = build_tiny_vision_tower(
        TinyVisionSpec(hidden_size=32, intermediate_size=64, num_layers=1, image_size_px=16, patch_size_px=8),
        0,
    )
    settings = ArmSettings(
        max_steps=6,
        batch_size=8,
        learning_rate=1e-3,
        weight_decay=0.0,
        warmup_steps=2,
        max_grad_norm=1.0,
        dense_ratio=0.5,
        adapter_width=16,
        adapter_depth=1,
        projection_dim=8,
        text_tower=TextTowerSpec(32, 1, 2, 12),
        clip_long_max_tokens=48,
    )

    def data(count: int, seed: int) -> CaptionedImages:
        generator = torch.Generator().manual_seed(seed)
        texts = {"short": _captions(count, 6, seed), "long": _captions(count, 40, seed + 1)}
        features = {
            name: {kind: torch.randn(count, 24, generator=generator) for kind in texts}
            for name in ("finetuned", "base")
        }
        tokens = {
            arm: {kind: tokenize_for_clip(tokenizer, captions, width)[0] for kind, captions in texts.items()}
            for arm, width in (("clip_77", 12), ("clip_long", 48))
        }
        return CaptionedImages(torch.randn(count, 3, 16, 16, generator=generator), features, tokens)

    return tokenizer, tower, settings, data(24, 0), data(10, 100)


def test_text_towers_encode_short_and_long_captions_apart_as_if_each_stood_alone(tiny_setup):
    tokenizer, tower, settings, train, _ = tiny_setup
    model = build_arm("clip_long", tower, train, settings, tokenizer, seed=0).eval()
    index = torch.arange(10)
    dense = torch.tensor([True, False] * 5)
    with torch.no_grad():
        together = text_features("clip_long", model, train, index, dense)
        alone = []
        for row, is_dense in zip(index.tolist(), dense.tolist(), strict=True):
            kind = train.tokens["clip_long"]["long" if is_dense else "short"]
            width = int(kind["attention_mask"][row].sum())
            alone.append(
                model.get_text_features(
                    kind["input_ids"][row : row + 1, :width], kind["attention_mask"][row : row + 1, :width]
                )
            )
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-4)


def test_runs_as_ray_tasks_equal_runs_in_this_process_in_seed_then_arm_order(tiny_setup, ray_session):
    from experiments.long_caption.config import ARMS
    from experiments.long_caption.runs import LONGEST_FIRST, run_arms_on_ray

    assert sorted(LONGEST_FIRST) == sorted(ARMS)

    tokenizer, tower, settings, train, held_out = tiny_setup
    arms, seeds, seen = ("llm2clip", "clip_77"), (1, 0), []
    rows = run_arms_on_ray(
        arms, seeds, tower, train, held_out, settings, tokenizer, 1, seen.append, validation=held_out
    )
    assert [(r["seed"], r["arm"]) for r in rows] == [
        (1, "llm2clip"),
        (1, "clip_77"),
        (0, "llm2clip"),
        (0, "clip_77"),
    ]
    assert sorted((r["seed"], r["arm"]) for r in seen) == sorted((r["seed"], r["arm"]) for r in rows)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = [
            run_one(arm, seed, tower, train, held_out, settings, tokenizer, held_out)
            for seed in seeds
            for arm in arms
        ]
    finally:
        torch.set_num_threads(threads)
    assert all(row.pop("run_s") > 0 for row in rows)
    assert rows == here
    assert all(row["loss_last"] != row["loss_first"] for row in rows)
    assert {"long_i2t_r1", "val_short_t2i_r5", "long_i2t_hits"} <= set(rows[0])


def test_llm_arms_train_through_the_production_step_and_every_arm_clamps_the_logit_scale(tiny_setup):
    """The llm2clip arm's losses are train_vision's train_steps on the arm's batches (the claims vouch for
    the step users run); every arm holds the logit scale itself at ln 100, as the production step does."""
    import math

    from experiments.long_caption.arms import batch_plan, train_arm
    from pipelines.train_vision.loop import VisionLoopSettings, build_optimizer, train_steps

    tokenizer, tower, settings, train, _ = tiny_setup
    production = build_arm("llm2clip", tower, train, settings, tokenizer, 3)
    loop = VisionLoopSettings(
        settings.learning_rate, settings.weight_decay, settings.warmup_steps, settings.max_steps, 1.0
    )
    optimizer, scheduler = build_optimizer(production, loop)
    features, expected = train.llm_features["finetuned"], []
    batches = (
        (train.pixels[i], torch.where(dense[:, None], features["long"][i], features["short"][i]))
        for i, dense in batch_plan(len(train), settings, 3)
    )
    train_steps(
        production,
        batches,
        loop,
        optimizer,
        scheduler,
        0,
        lambda step, metrics: expected.append(metrics["loss"]),
        torch.device("cpu"),
    )
    arm = build_arm("llm2clip", tower, train, settings, tokenizer, 3)
    assert train_arm("llm2clip", arm, train, settings, 3) == expected
    assert len(expected) == settings.max_steps

    for name in ("llm2clip", "clip_long"):
        model = build_arm(name, tower, train, settings, tokenizer, 0)
        with torch.no_grad():
            model.logit_scale.fill_(5.0)  # above ln 100 = 4.605: the forward clamps, the step must too
        train_arm(name, model, train, settings, 0)
        assert model.logit_scale.item() <= math.log(100) + 1e-6, name
