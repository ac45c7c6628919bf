"""Planning needs no Ray: keys, cache status and the selection flags, on real stage specs."""

from __future__ import annotations

import pytest

from demo.scenes.stage import ScenesConfig
from demo.tiny_models import TinyModelsConfig
from ops.artifact_dir import ArtifactDir
from workflows.plan import CACHED, RERUN, RUN, SKIP, PlanError, build_plan
from workflows.registry import CHAIN

STAGES = {"scenes": ScenesConfig(num_train=8, num_eval=4), "tiny_models": TinyModelsConfig()}


def _complete(plan_entry):
    plan_entry.artifact.write_manifest({"stage": plan_entry.spec.name, "counts": {}})


def _actions(plan):
    return {p.spec.name: p.action for p in plan}


def test_fresh_root_runs_everything_and_complete_stages_are_cached(tmp_path):
    plan = build_plan(STAGES, CHAIN, str(tmp_path))
    assert _actions(plan) == {"scenes": RUN, "tiny_models": RUN}
    for entry in plan:
        _complete(entry)
    assert _actions(build_plan(STAGES, CHAIN, str(tmp_path))) == {"scenes": CACHED, "tiny_models": CACHED}


def test_a_directory_without_manifest_is_not_a_cache_hit(tmp_path):
    plan = build_plan(STAGES, CHAIN, str(tmp_path))
    scenes_dir: ArtifactDir = plan[0].artifact
    with scenes_dir.open("tables/train-00000.parquet", "wb") as handle:
        handle.write(b"half written")
    scenes_dir.mark_shard_done("train-00000", {"num_in": 8, "num_out": 8})
    again = build_plan(STAGES, CHAIN, str(tmp_path))
    assert again[0].action == RUN and "resuming" in again[0].reason


def test_changing_a_config_changes_that_key_and_downstream_keys_only(tmp_path):
    base = {p.spec.name: p.key for p in build_plan(STAGES, CHAIN, str(tmp_path))}
    changed_down = dict(STAGES, tiny_models=TinyModelsConfig(seed=1))
    keys = {p.spec.name: p.key for p in build_plan(changed_down, CHAIN, str(tmp_path))}
    assert keys["scenes"] == base["scenes"] and keys["tiny_models"] != base["tiny_models"]
    changed_up = dict(STAGES, scenes=ScenesConfig(num_train=9, num_eval=4))
    keys = {p.spec.name: p.key for p in build_plan(changed_up, CHAIN, str(tmp_path))}
    assert keys["scenes"] != base["scenes"] and keys["tiny_models"] != base["tiny_models"]


def test_selection_flags(tmp_path):
    for entry in build_plan(STAGES, CHAIN, str(tmp_path)):
        _complete(entry)
    root = str(tmp_path)
    assert _actions(build_plan(STAGES, CHAIN, root, only="tiny_models")) == {
        "scenes": CACHED,
        "tiny_models": RERUN,
    }
    assert _actions(build_plan(STAGES, CHAIN, root, only="scenes")) == {
        "scenes": RERUN,
        "tiny_models": CACHED,
    }
    assert _actions(build_plan(STAGES, CHAIN, root, from_stage="scenes")) == {
        "scenes": RERUN,
        "tiny_models": RERUN,
    }
    assert _actions(build_plan(STAGES, CHAIN, root, force=("scenes",))) == {
        "scenes": RERUN,
        "tiny_models": CACHED,
    }


def test_only_needs_upstream_cached_and_names_are_checked(tmp_path):
    with pytest.raises(PlanError, match="upstream stage scenes has no complete artifact"):
        build_plan(STAGES, CHAIN, str(tmp_path), only="tiny_models")
    with pytest.raises(PlanError, match="--force recaptoin: not a stage"):
        build_plan(STAGES, CHAIN, str(tmp_path), force=("recaptoin",))
    only_first = build_plan({"scenes": STAGES["scenes"]}, CHAIN, str(tmp_path))
    assert [p.spec.name for p in only_first] == ["scenes"]


def test_only_leaves_uncached_downstream_alone(tmp_path):
    plan = build_plan(STAGES, CHAIN, str(tmp_path))
    _complete(plan[0])
    assert _actions(build_plan(STAGES, CHAIN, str(tmp_path), only="scenes")) == {
        "scenes": RERUN,
        "tiny_models": SKIP,
    }


def test_every_recipe_reads_only_declared_inputs_that_come_earlier():
    """Each stage's declared inputs precede it in the chain, and what every shipped recipe's config makes
    it read is among them (StageSpec.inputs_for checks the latter and raises)."""
    from tests.conftest import REPO_ROOT
    from workflows.recipe import load_recipe

    position = {spec.name: i for i, spec in enumerate(CHAIN)}
    for spec in CHAIN:
        assert all(position[dep] < position[spec.name] for dep in spec.inputs), spec.name
    resolved = set()
    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        recipe = load_recipe(path, CHAIN)
        for name, config in recipe.stages.items():
            spec = next(s for s in CHAIN if s.name == name)
            resolved.update((name, dep) for dep in spec.inputs_for(config))
    # The previously undeclared reads are now declared and used by a shipped recipe.
    assert ("finetune_text", "lm_pretrain") in resolved


def test_a_stage_reading_an_undeclared_input_is_refused():
    import dataclasses

    spec = next(s for s in CHAIN if s.name == "tiny_models")
    broken = dataclasses.replace(spec, resolve_inputs=lambda config: ("download",))
    with pytest.raises(ValueError, match="not among its declared inputs"):
        broken.inputs_for(TinyModelsConfig())
