"""Where and how a stage runs is not part of what it produces: every stage's unkeyed fields, listed, and
the same key whatever value each takes, so a resized cluster or more retries reuse finished work."""

from __future__ import annotations

import dataclasses

import pytest

from ops.hashing import content_key
from testbed.demo_run import DEMO_RECIPE
from workflows.recipe import load_recipe
from workflows.registry import CHAIN

# stage -> {unkeyed field: another value it may take}
UNKEYED = {
    "download": {"processes_count": 16, "thread_count": 32, "distributor": "ray"},
    "recaption": {
        "batch_size": 64,
        "num_engine_replicas": 4,
        "accelerator_type": "H100",
        "cpu_kv_cache_gib": 8,
        "num_sample_previews": 2,
    },
    "finetune_text": {"checkpoint_every_steps": 7, "max_failures": 5, "placement_strategy": "SPREAD"},
    "embed": {"num_actors": 8, "num_cpus_per_actor": 2.5},
    "train_vision": {
        "eval_batch_size": 32,
        "eval_every_steps": 11,
        "decode_processes": 3,
        "prefetch_batches": 4,
        "checkpoint_every_steps": 13,
        "max_failures": 5,
        "placement_strategy": "SPREAD",
    },
    "evaluate": {"num_cpus": 8},
}
# A field per stage that decides its output, as a check that the keys can change at all.
KEYED = {
    "download": ("samples_per_shard", 7),
    "recaption": ("max_tokens", 9),
    "finetune_text": ("num_workers", 3),
    "embed": ("batch_size", 5),
    "train_vision": ("num_workers", 3),
    "evaluate": ("heatmap_samples", 5),
}
SPECS = {spec.name: spec for spec in CHAIN}


def _key(stage: str, config) -> str:
    return content_key(stage, SPECS[stage].code_version, config, {"upstream": "k"})


def test_every_stage_lists_its_unkeyed_fields():
    for spec in CHAIN:
        unkeyed = {
            f.name for f in dataclasses.fields(spec.config_cls) if f.metadata.get("in_key", True) is False
        }
        assert unkeyed == set(UNKEYED.get(spec.name, {})), spec.name


@pytest.mark.parametrize("stage", sorted(UNKEYED))
def test_an_unkeyed_field_keeps_the_key_and_a_keyed_one_changes_it(stage):
    config = load_recipe(DEMO_RECIPE, CHAIN).stages[stage]
    key = _key(stage, config)
    for name, value in UNKEYED[stage].items():
        assert getattr(config, name) != value, name  # the test changes something
        assert _key(stage, dataclasses.replace(config, **{name: value})) == key, name
    name, value = KEYED[stage]
    assert _key(stage, dataclasses.replace(config, **{name: value})) != key
