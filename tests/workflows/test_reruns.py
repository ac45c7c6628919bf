"""Rerunning single stages of a finished demo from its cached artifacts: --only, --from, --force."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import DEMO_STAGES, run_workflow
from tests.workflows.test_full_workflow import _executed, _only_complete


def _copy_of_demo(demo_root: Path, tmp_path: Path) -> Path:
    """The finished demo without its MLflow store, so the reruns' runs land in a store of their own."""
    root = tmp_path / "root"
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns("mlflow.db", "mlflow-artifacts"))
    return root


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
    root = _copy_of_demo(demo_root, tmp_path)
    metrics_before = json.loads((_only_complete(root, "evaluate") / "metrics.json").read_text())

    executed, before, after = _rerun(root, capsys, "--only", "evaluate")

    assert executed == ["evaluate"]
    assert _rewritten(before, after) == ["evaluate"]
    # Same exported model, same held-out scenes: the same recalls.
    assert json.loads((_only_complete(root, "evaluate") / "metrics.json").read_text()) == metrics_before


@pytest.mark.slow
def test_from_embed_reruns_embed_and_everything_below_on_the_cached_encoder(demo_root, tmp_path, capsys):
    root = _copy_of_demo(demo_root, tmp_path)
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
    assert (_only_complete(root, "evaluate") / "metrics.json").is_file()


def _caption_and_rejected_keys(recaption: Path) -> tuple[list[str], list[str]]:
    def keys(folder: Path) -> list[str]:
        return [
            k
            for f in sorted(folder.glob("*.parquet"))
            for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()
        ]

    return keys(recaption / "captions"), keys(recaption / "rejected")


@pytest.mark.slow
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
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not written_since_start():
            time.sleep(0.02)
        for process in psutil.process_iter(["pid", "cmdline"]):
            if "vLLMEngineStageUDF" in " ".join(process.info["cmdline"] or []):
                process.kill()
                killed.append(process.info["pid"])
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.reliability
def test_force_recaption_reruns_it_and_leaves_downstream_cached(demo_root, tmp_path, capsys, record_property):
    """Also the recaption stage losing its Ray worker: the vLLM engine's actor is SIGKILLed after the
    first shard; Ray Data restarts it and retries the batches it held."""
    root = _copy_of_demo(demo_root, tmp_path)
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
