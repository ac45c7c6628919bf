"""bench.language_offset: a language that lands as a whole away from English is at chance text -> image,
and moving it onto English's mean brings its content back."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.language_offset import (
    language_shift,
    mean_pair_cosine,
    second_language_scores,
    summarize,
    summary_table,
)
from testbed.demo_run import REPO_ROOT


def _scenes(n: int = 128, dim: int = 32, offset: float = 6.0):
    """Images; English features near them; second-language features = English ones plus one large
    shared offset and some noise of their own."""
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    english = image + 0.2 * torch.randn(n, dim, generator=generator)
    direction = F.normalize(torch.randn(dim, generator=generator), dim=0)
    second = english + offset * direction + 0.2 * torch.randn(n, dim, generator=generator)
    # the images lean on the offset's direction unevenly, so some images are nearest to every caption
    image = F.normalize(image + 0.3 * torch.rand(n, 1, generator=generator) * direction, dim=-1)
    return image, english, second


def _unit(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=-1)


def test_an_offset_language_is_at_chance_text_to_image_and_the_shift_restores_it():
    image, english, second = _scenes()
    scores = second_language_scores(image, _unit, english, second, second.mean(0), english.mean(0))
    chance = 1 / len(image)
    assert scores["raw_t2i_r1"] <= 5 * chance  # every caption ranks the same few images first
    assert scores["raw_i2t_r1"] > 0.5  # each image still tells the captions apart
    assert scores["shifted_t2i_r1"] > 0.5 and scores["shifted_i2t_r1"] > 0.5
    assert scores["shifted_t2i_r1"] > 10 * scores["raw_t2i_r1"]
    assert scores["cosine_within_second"] > 0.9 > 0.2 > scores["cosine_within_english"]
    assert scores["cosine_between_means"] < scores["cosine_within_second"]


def test_without_an_offset_the_shift_changes_nothing():
    image, english, _ = _scenes(offset=0.0)
    scores = second_language_scores(image, _unit, english, english, english.mean(0), english.mean(0))
    for way in ("i2t", "t2i"):
        assert scores[f"raw_{way}_r1"] == scores[f"shifted_{way}_r1"] > 0.9


def test_language_shift_moves_the_mean_and_keeps_the_spread():
    features = torch.randn(50, 8) + 3.0
    target = torch.randn(8)
    moved = language_shift(features, features.mean(0), target)
    assert torch.allclose(moved.mean(0), target, atol=1e-5)
    assert torch.allclose(moved - moved.mean(0), features - features.mean(0), atol=1e-5)


def test_mean_pair_cosine_counts_distinct_pairs():
    same = _unit(torch.ones(4, 3))
    assert mean_pair_cosine(same) == pytest.approx(1.0)
    opposite = _unit(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert mean_pair_cosine(opposite) == pytest.approx(-1.0)


def test_summary_averages_over_seeds_and_the_table_reports_each_split():
    rows = [
        {"arm": "llm2clip", "seed": seed, "held_out_raw_t2i_r1": value, "validation_raw_t2i_r1": value}
        for seed, value in ((0, 0.1), (1, 0.3))
    ]
    summary = summarize(rows, {"held_out": 256, "validation": 1000})
    assert summary["llm2clip"]["held_out_raw_t2i_r1"]["mean"] == pytest.approx(0.2)
    assert summary["llm2clip"]["held_out_raw_t2i_r1"]["std"] == pytest.approx(0.1414, abs=1e-3)
    assert summary["chance"]["held_out"] == pytest.approx(1 / 256)
    full = dict.fromkeys(_metric_names(), 0.5)
    table = summary_table(
        summarize([{"arm": "base_llm", "seed": 0, **full}], {"held_out": 4, "validation": 2})
    )
    assert "| base_llm | held-out (chance 25.00%) | 50.0 ± 0.0 |" in table
    assert "validation (chance 50.00%)" in table


def _metric_names() -> list[str]:
    recalls = [f"{way}_{d}_r{k}" for way in ("raw", "shifted") for d in ("i2t", "t2i") for k in (1, 5)]
    geometry = ["cosine_within_second", "cosine_within_english", "cosine_between_means"]
    return [f"{split}_{name}" for split in ("held_out", "validation") for name in recalls + geometry]


RECIPE = str(REPO_ROOT / "configs/long_caption_experiment.yaml")


def _finished_stages(root, overrides: tuple[str, ...]) -> None:
    """Every stage of the recipe's plan marked finished under root (an empty manifest is enough)."""
    from workflows.plan import build_plan
    from workflows.recipe import load_recipe
    from workflows.registry import CHAIN

    recipe = load_recipe(RECIPE, CHAIN, overrides)
    for planned in build_plan(recipe.stages, CHAIN, str(root)):
        planned.artifact.write_manifest({})


@pytest.mark.parametrize("base_stage", ["lm_pretrain", "tiny_models"])
def test_stage_folders_name_each_role_from_the_recipes_plan(tmp_path, base_stage):
    import argparse

    from bench.language_offset import _stage_folders

    overrides = (f"long_caption_experiment.base_llm_stage={base_stage}",)
    args = argparse.Namespace(config=RECIPE, artifacts=str(tmp_path), overrides=list(overrides))
    with pytest.raises(SystemExit, match="no finished artifact"):
        _stage_folders(args)
    _finished_stages(tmp_path, overrides)
    config, folders = _stage_folders(args)
    assert config.base_llm_stage == base_stage
    assert folders["vision"].endswith("/vision") and "/tiny_models/" in folders["vision"]
    assert folders["random_init"].endswith("/llm") and "/tiny_models/" in folders["random_init"]
    assert folders["base"].endswith("/llm") and f"/{base_stage}/" in folders["base"]
    assert folders["tuned"].endswith("/encoder") and "/finetune_text/" in folders["tuned"]
    assert folders["shards"].endswith("/shards") and "/download/" in folders["shards"]
