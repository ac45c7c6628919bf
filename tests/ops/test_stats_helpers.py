"""The small shared helpers the stages use: reason counting, shard-stats merging, the schedule, settings
filled from a config by name, and captions by field."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from ops.captioned_shards import ORIGINAL, caption_of
from ops.config_schema import settings_from
from ops.manifest import StageCounts, count_reasons, merge_shard_stats
from ops.schedules import cosine_with_warmup


def test_reasons_and_shard_stats_add_up_to_counts_that_reconcile():
    assert count_reasons(["a", "b", "a"]) == {"a": 2, "b": 1}
    shards = [
        {"num_in": 5, "num_out": 4, "rejected_by_reason": {"a": 1}},
        {"num_in": 3, "num_out": 1, "rejected_by_reason": {"a": 1, "b": 1}},
        {"num_in": 2, "num_out": 2},
    ]
    totals, by_reason = merge_shard_stats(shards, ("num_in", "num_out"))
    assert totals == {"num_in": 10, "num_out": 7} and by_reason == {"a": 2, "b": 1}
    StageCounts(int(totals["num_in"]), int(totals["num_out"]), 3, by_reason)  # reconciles, or raises


def test_schedule_warms_up_linearly_then_decays_to_zero():
    assert [cosine_with_warmup(s, 4, 10) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_with_warmup(4, 4, 10) == 1.0
    assert math.isclose(cosine_with_warmup(7, 4, 10), 0.5)
    assert cosine_with_warmup(10, 4, 10) == 0.0 and cosine_with_warmup(50, 4, 10) == 0.0


@dataclasses.dataclass(frozen=True)
class Loop:
    learning_rate: float
    steps: int
    batch: int


@dataclasses.dataclass(frozen=True)
class StageConfig:
    learning_rate: float = 0.1
    mntp_learning_rate: float = 0.5
    mntp_steps: int = 7
    batch_size_per_worker: int = 4


def test_settings_are_filled_by_name_with_prefix_and_given_values():
    config = StageConfig()
    assert settings_from(Loop, config, "mntp_", batch=config.batch_size_per_worker) == Loop(0.5, 7, 4)
    with pytest.raises(AttributeError, match="StageConfig has no field 'steps' for Loop"):
        settings_from(Loop, config, batch=4)


def test_captions_by_field():
    sample = {"txt": b"a red cube", "json": {"dense_caption": "A red cube on grey.", "blank": "  "}}
    assert caption_of(sample, ORIGINAL) == "a red cube"
    assert caption_of(sample, "dense_caption") == "A red cube on grey."
    assert caption_of(sample, "blank") is None and caption_of(sample, "missing") is None
    assert caption_of({"json": json.loads('{"caption": "alt"}')}, ORIGINAL) == "alt"
