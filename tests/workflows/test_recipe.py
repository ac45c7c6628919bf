from __future__ import annotations

from pathlib import Path

import pytest

from ops.config_schema import ConfigError
from workflows.recipe import load_recipe
from workflows.registry import CHAIN

REPO = Path(__file__).resolve().parents[2]


def test_every_shipped_recipe_validates():
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    assert recipes
    for path in recipes:
        recipe = load_recipe(path, CHAIN)
        assert recipe.stages, path


def test_overrides_are_typed_yaml_values():
    recipe = load_recipe(
        REPO / "configs/demo.yaml",
        CHAIN,
        ("scenes.num_train=64", "tiny_models.llm.num_layers=3", "ray.num_cpus=2"),
    )
    assert recipe.stages["scenes"].num_train == 64
    assert recipe.stages["tiny_models"].llm.num_layers == 3
    assert recipe.ray.num_cpus == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("scenes.num_trian=3",), "configs/demo.yaml: scenes.num_trian: unknown key"),
        (("scenes.num_train=many",), "scenes.num_train: expected an integer, got 'many'"),
        (("scenes.num_train=-3",), "scenes.num_train: expected a positive number of scenes, got -3"),
        (("tiny_models.llm.head_dim=16",), "tiny_models.llm.head_dim: expected a multiple of 32"),
        (("recaptoin.max_tokens=3",), "recaptoin: unknown key; a recipe has"),
        (("scenes",), "expected KEY=VALUE"),
        (("ray.num_cpus=0",), "ray.num_cpus: expected a positive number"),
    ],
)
def test_bad_recipes_name_file_and_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(REPO / "configs/demo.yaml", CHAIN, overrides)
    assert message in str(err.value)


def test_missing_file_and_missing_upstream(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml", CHAIN)
    lonely = tmp_path / "lonely.yaml"
    lonely.write_text("name: x\ntiny_models: {}\n")
    with pytest.raises(ConfigError, match="tiny_models: expected its input stages"):
        load_recipe(lonely, CHAIN)
