"""Rerunning single stages of a finished demo from its cached artifacts: --only, --from, --force."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from testbed.demo_run import DEMO_STAGES
from testbed.waiting import processes_matching, wait_until
from tests.conftest import copy_of_demo, run_workflow
from tests.training_records import assert_same_tensors, logged_steps, sqlite_store
from tests.workflows.test_full_workflow import _executed, _only_complete


def _manifest_mtimes(root: Path) -> dict[str, int]:
    return {
        stage: (_only_complete(root, stage) / "manifest.json").stat().st_mtime_ns for stage in DEMO_STAGES
    }


def _rerun(root: Path, capsys, *flags: str) -> tuple[list[str], dict[str, int], dict[str, int]]:
    before = _manifest_mtimes(root)
    capsys.readouterr()
    assert run_workflow(root, *flags) == 0
    executed = _executed(capsys.readouterr().out)
    return executed, before, _manifest_mtimes(root)


def _rewritten(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return [stage for stage in DEMO_STAGES if after[stage] != before[stage]]


@pytest.mark.slow
def test_only_evaluate_reruns_it_alone_and_gets_the_same_numbers(demo_root, tmp_path, capsys):
    root = copy_of_demo(demo_root, tmp_path / "root")
    metrics_before = json.loads((_only_complete(root, "evaluate") / "metrics.json").read_text())

    executed, before, after = _rerun(root, capsys, "--only", "evaluate")

    assert executed == ["evaluate"]
    assert _rewritten(before, after) == ["evaluate"]
    # Same exported model, same held-out scenes: the same recalls.
    assert json.loads((_only_complete(root, "evaluate") / "metrics.json").read_text()) == metrics_before


@pytest.mark.slow
def test_from_embed_reruns_embed_and_everything_below_on_the_cached_encoder(
    demo_root, demo_tracking_uri, tmp_path, capsys
):
    root = copy_of_demo(demo_root, tmp_path / "root")
    sidecars_before = {
        p.name: pq.read_table(p)
        for p in sorted((_only_complete(root, "embed") / "sidecars").glob("*.parquet"))
    }

    executed, before, after = _rerun(root, capsys, "--from", "embed")

    assert executed == ["embed", "train_vision", "evaluate"]
    assert _rewritten(before, after) == ["embed", "train_vision", "evaluate"]
    sidecars_after = {
        p.name: pq.read_table(p)
        for p in sorted((_only_complete(root, "embed") / "sidecars").glob("*.parquet"))
    }
    assert sidecars_after.keys() == sidecars_before.keys()
    for name, table in sidecars_after.items():
        # The cached fine-tuned encoder, reloaded: the same keys in the same order and the same vectors.
        assert table.column("key").to_pylist() == sidecars_before[name].column("key").to_pylist()
        assert table.column("dense").to_pylist() == sidecars_before[name].column("dense").to_pylist()
    manifest = json.loads((_only_complete(root, "train_vision") / "manifest.json").read_text())
    assert manifest["counts"]["num_out"] > 0
    # The same seed on the same inputs: the vision stage gives the demo's model again, bit for bit, with
    # the same loss at every logged step, and evaluation the same numbers.
    assert_same_tensors(
        _only_complete(root, "train_vision") / "export", _only_complete(demo_root, "train_vision") / "export"
    )
    rerun_losses = logged_steps(sqlite_store(root), "train_vision", "train_loss")
    assert rerun_losses == logged_steps(demo_tracking_uri, "train_vision", "train_loss")
    assert sorted(rerun_losses) == list(range(5, 41, 5))
    assert json.loads((_only_complete(root, "evaluate") / "metrics.json").read_text()) == json.loads(
        (_only_complete(demo_root, "evaluate") / "metrics.json").read_text()
    )


def _caption_and_rejected_keys(recaption: Path) -> tuple[list[str], list[str]]:
    def keys(folder: Path) -> list[str]:
        return [
            k
            for f in sorted(folder.glob("*.parquet"))
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()
        ]

    return keys(recaption / "captions"), keys(recaption / "rejected")


def _kill_the_vllm_engine_after_a_shard(stage_dir: Path, killed: list[int]) -> threading.Thread:
    """SIGKILL the Ray worker that holds the vLLM engine (a Ray Data actor) once one shard is written."""

    started = time.time()

    def written_since_start() -> bool:  # the forced rerun first clears the old markers
        for marker in stage_dir.glob("_shards/*.json"):
            try:
                if marker.stat().st_mtime > started:
                    return True
            except FileNotFoundError:  # removed by the clear while we looked
                pass
        return False

    def watch() -> None:
        try:
            wait_until(written_since_start, 300, "a shard marker of the forced rerun", poll_s=0.02)
            engines = wait_until(lambda: processes_matching("vLLMEngineStageUDF"), 60, "the engine actor")
        except AssertionError:
            return  # nothing killed: the test's check of `killed` says so
        engines[0].kill()
        killed.append(engines[0].pid)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.reliability
def test_force_recaption_reruns_it_and_leaves_downstream_cached(demo_root, tmp_path, capsys, record_property):
    """Also the recaption stage losing its Ray worker: the vLLM engine's actor is SIGKILLed after the
    first shard; Ray Data restarts it and retries the batches it held."""
    root = copy_of_demo(demo_root, tmp_path / "root")
    recaption = _only_complete(root, "recaption")
    captioned, rejected = _caption_and_rejected_keys(recaption)

    killed: list[int] = []
    killer = _kill_the_vllm_engine_after_a_shard(recaption, killed)
    executed, before, after = _rerun(root, capsys, "--force", "recaption")
    killer.join(timeout=10)
    assert len(killed) == 1, "the engine actor was not found after the first shard"

    # Downstream keys hash recaption's config and key, not its sampled text, so they stay cached.
    assert executed == ["recaption"]
    assert _rewritten(before, after) == ["recaption"]
    captioned_again, rejected_again = _caption_and_rejected_keys(recaption)
    # Sampled captions differ run to run; every image is accounted for once, as a caption or a rejection.
    assert len(captioned_again) + len(rejected_again) == len(set(captioned_again) | set(rejected_again))
    assert set(captioned_again) | set(rejected_again) == set(captioned) | set(rejected)
    counts = json.loads((recaption / "manifest.json").read_text())["counts"]
    assert counts["num_out"] == len(captioned_again) and counts["num_in"] == len(captioned) + len(rejected)
    record_property(
        "got",
        f"vLLM engine actor killed after shard 1 of 2; restarted by Ray Data: {counts['num_in']} images "
        f"once each ({counts['num_out']} captions, {counts['num_rejected']} rejected)",
    )
