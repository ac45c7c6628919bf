"""Same key, same model, from a cold start: a second run of the small demo from nothing (a fresh
download, whose threads finish in another order) trains the demo job's model again, bit for bit, and
evaluation gives the same numbers. Reruns from one download artifact cannot show this."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.demo_run import DEMO_RECIPE
from tests.conftest import run_workflow
from tests.training_records import assert_same_tensors


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


@pytest.mark.slow
def test_a_second_cold_run_gives_the_same_export_and_metrics(demo_root, ray_session, tmp_path):
    # Without recaption, whose captions (noise from the untrained captioner) no later demo stage reads:
    # every other stage runs cold, under the same keys as the demo job's.
    recipe = tmp_path / "demo_without_recaption.yaml"
    recipe.write_text(f"extends: {DEMO_RECIPE}\nname: demo-cold\nrecaption: null\n")
    root = tmp_path / "cold"
    assert run_workflow(root, recipe=recipe) == 0

    for stage in ("download", "finetune_text", "embed", "train_vision", "evaluate"):
        assert _complete(root, stage).name == _complete(demo_root, stage).name, stage  # the same keys
    assert_same_tensors(
        _complete(root, "train_vision") / "export", _complete(demo_root, "train_vision") / "export"
    )
    metrics = json.loads((_complete(root, "evaluate") / "metrics.json").read_text())
    assert metrics == json.loads((_complete(demo_root, "evaluate") / "metrics.json").read_text())
