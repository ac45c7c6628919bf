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


CPU_RECIPES = {"demo.yaml", "long_caption_experiment.yaml"}
PAPER_RECIPES = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if p.name not in CPU_RECIPES)


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_paper_recipes_state_their_gpus_and_every_stages_cost_and_dry_run(name, tmp_path, capsys):
    from workflows.full import main

    recipe = load_recipe(REPO / "configs" / name, CHAIN)
    resources = recipe.resources
    assert resources is not None and resources.gpus > 0 and resources.gpu_type, name
    assert [e.stage for e in resources.estimates] == list(recipe.stages)
    assert all(e.hours > 0 and e.basis for e in resources.estimates)
    assert {"embed", "train_vision", "evaluate"} <= recipe.stages.keys()
    # A caption encoder: fine-tuned here, or the released one named as the frozen teacher.
    assert "finetune_text" in recipe.stages or recipe.stages["embed"].encoder_preset == "llm2vec"

    assert main(["--config", str(REPO / "configs" / name), "--artifacts", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"expects: {resources.gpus} x {resources.gpu_type}" in out
    total = next(line for line in out.splitlines() if line.startswith("total "))
    assert f"{sum(e.gpus * e.hours for e in resources.estimates):g}" in total
    assert list(tmp_path.iterdir()) == []  # a dry run touches nothing


def test_the_paper_recipes_cover_both_encoders_both_towers_and_both_data_settings():
    recipes = [load_recipe(REPO / "configs" / name, CHAIN) for name in PAPER_RECIPES]
    encoders = {r.stages["finetune_text"].base_model for r in recipes if "finetune_text" in r.stages}
    towers = {r.stages["train_vision"].vision_model for r in recipes}
    assert {"meta-llama/Llama-3.2-1B", "meta-llama/Meta-Llama-3-8B-Instruct"} <= encoders
    assert {"openai/clip-vit-large-patch14-336", "timm:eva02_large_patch14_clip_336.merged2b"} <= towers
    sources = {tuple(s.name for s in r.stages["download"].sources) for r in recipes}
    assert ("cc3m", "cc12m") in sources and ("cc3m", "cc12m", "yfcc15m") in sources
    assert any("recap" in r.name and "recaption" not in r.stages for r in recipes)


def test_extends_merges_sections_and_keeps_the_childs_identity(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: base\nexperiment: base-exp\nscenes: {num_train: 8, num_eval: 4, seed: 3}\n"
        "resources: {gpus: 1, estimates: [{stage: scenes, hours: 1}]}\n"
    )
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nscenes: {num_train: 16}\n")
    recipe = load_recipe(tmp_path / "child.yaml", CHAIN)
    assert (recipe.name, recipe.experiment) == ("child", "llm2clip-child")
    assert (recipe.stages["scenes"].num_train, recipe.stages["scenes"].num_eval) == (16, 4)
    assert recipe.stages["scenes"].seed == 3 and recipe.resources is None

    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nname: loop\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_recipe(tmp_path / "loop.yaml", CHAIN)
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\nname: orphan\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: recipe file not found"):
        load_recipe(tmp_path / "orphan.yaml", CHAIN)


def test_resources_must_estimate_exactly_the_recipes_stages(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\nscenes: {num_train: 8, num_eval: 4}\n"
        "resources: {gpus: 1, estimates: [{stage: embed, gpus: 1, hours: 1}]}\n"
    )
    with pytest.raises(ConfigError, match=r"resources.estimates\[0\].stage: expected one of \['scenes'\]"):
        load_recipe(path, CHAIN)
    path.write_text("name: r\nscenes: {num_train: 8, num_eval: 4}\nresources: {gpus: 1, estimates: []}\n")
    with pytest.raises(ConfigError, match="an estimate for every stage"):
        load_recipe(path, CHAIN)
    path.write_text(
        "name: r\nscenes: {num_train: 8, num_eval: 4}\n"
        "resources: {gpus: 1, estimates: [{stage: scenes, gpus: 4, hours: 1}]}\n"
    )
    with pytest.raises(ConfigError, match="gpus: expected at most gpus"):
        load_recipe(path, CHAIN)


def test_paper_recipes_train_the_released_adapter_shape_at_their_llms_width():
    widths = {"meta-llama/Llama-3.2-1B": 2048, "meta-llama/Meta-Llama-3-8B-Instruct": 4096}
    for name in PAPER_RECIPES:
        recipe = load_recipe(REPO / "configs" / name, CHAIN)
        vision = recipe.stages["train_vision"]
        assert (vision.adapter_input_projection, vision.adapter_expansion, vision.adapter_output_bias) == (
            False,
            2,
            True,
        ), name
        assert (vision.warmup_steps, vision.max_grad_norm, vision.layer_decay) == (0, 5.0, 0.85), name
        if "finetune_text" in recipe.stages:
            assert vision.adapter_width == widths[recipe.stages["finetune_text"].base_model], name
        else:  # the released Llama-3-8B teacher
            assert vision.adapter_width == 4096, name


def test_the_released_teacher_recipe_skips_fine_tuning():
    from workflows.plan import build_plan

    recipe = load_recipe(REPO / "configs" / "llm2clip_official_teacher_clip_l336_cc3m_cc12m.yaml", CHAIN)
    assert "finetune_text" not in recipe.stages
    for stage in ("embed", "evaluate"):
        config = recipe.stages[stage]
        assert config.encoder == "microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned"
        assert config.encoder_preset == "llm2vec"
    plan = {p.spec.name: p for p in build_plan(recipe.stages, CHAIN, "/nonexistent")}
    assert "finetune_text" not in plan["embed"].input_keys


def test_null_in_a_child_recipe_drops_an_inherited_section(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nscenes: {num_train: 8}\ntiny_models: {}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\ntiny_models: null\n")
    assert list(load_recipe(tmp_path / "child.yaml", CHAIN).stages) == ["scenes"]
