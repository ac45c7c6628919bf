"""The chain for real: local Ray, the scenes and tiny_models stages, MLflow on SQLite."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from demo.scenes.table import read_scene_table
from ops.artifact_dir import ArtifactDir
from tests.conftest import SMALL_DEMO, run_workflow


def _executed(output: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith("executed: "):
            return line[len("executed: ") :].split(", ")
        if line.startswith("every stage was cached"):
            return []
    raise AssertionError(f"no summary line in output:\n{output}")


def _only_complete(root, stage):
    dirs = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_first_run_writes_reconciled_manifests(demo_root):
    from demo.scenes.stage import STAGE as SCENES

    scenes_dir = _only_complete(demo_root, "scenes")
    manifest = json.loads((scenes_dir / "manifest.json").read_text())
    assert manifest["counts"]["num_in"] == 48 + 16 == manifest["counts"]["num_out"]
    assert manifest["key"] == scenes_dir.name and manifest["code_version"] == SCENES.code_version
    table = read_scene_table(ArtifactDir(str(scenes_dir)))
    assert table.num_rows == 64 and len(set(table.column("key").to_pylist())) == 64
    assert all((scenes_dir / p).is_file() for p in table.column("image_path").to_pylist())
    tiny = json.loads((_only_complete(demo_root, "tiny_models") / "manifest.json").read_text())
    assert tiny["input_keys"] == {"scenes": scenes_dir.name}


def test_demo_download_fetches_every_scene_over_loopback(demo_root):
    download_dir = _only_complete(demo_root, "download")
    manifest = json.loads((download_dir / "manifest.json").read_text())
    assert manifest["input_keys"] == {"scenes": _only_complete(demo_root, "scenes").name}
    assert manifest["counts"] == {"num_in": 64, "num_out": 64, "num_rejected": 0, "rejected_by_reason": {}}
    assert [s["count"] for s in manifest["details"]["shards"]] == [32, 32]
    metas = []
    for tar_path in sorted((download_dir / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            metas += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len({m["scene_key"] for m in metas}) == 64
    assert sum(m["split"] == "eval" for m in metas) == 16
    assert all(m["url"].startswith("http://127.0.0.1:") and m["width"] == 64 for m in metas)
    assert all(m["dense_caption"].startswith("The image shows") for m in metas)


def test_unchanged_second_run_executes_nothing_and_says_so(demo_root, capsys):
    capsys.readouterr()
    assert run_workflow(demo_root) == 0
    out = capsys.readouterr().out
    assert "nothing to run: every stage is cached" in out
    assert _executed(out) == []


def _a_run_of_the_chain(demo_root: Path, root: Path) -> None:
    """The state a first run of chain_recipe leaves: its three stages have the demo's configs and inputs,
    so the demo's artifacts are theirs (same keys)."""
    for stage in ("scenes", "tiny_models", "download"):
        shutil.copytree(demo_root / stage, root / stage)


def test_config_change_reruns_that_stage_and_downstream_only(
    tmp_path, demo_root, ray_session, capsys, chain_recipe
):
    _a_run_of_the_chain(demo_root, tmp_path)
    assert run_workflow(tmp_path, recipe=chain_recipe) == 0
    assert _executed(capsys.readouterr().out) == []
    assert run_workflow(tmp_path, overrides=(*SMALL_DEMO, "tiny_models.seed=1"), recipe=chain_recipe) == 0
    assert _executed(capsys.readouterr().out) == ["tiny_models"]
    assert run_workflow(tmp_path, overrides=(*SMALL_DEMO, "scenes.seed=1"), recipe=chain_recipe) == 0
    assert _executed(capsys.readouterr().out) == ["scenes", "tiny_models", "download"]
    # Each config's artifacts stay cached side by side.
    assert run_workflow(tmp_path, overrides=(*SMALL_DEMO, "tiny_models.seed=1"), recipe=chain_recipe) == 0
    assert _executed(capsys.readouterr().out) == []


def test_directory_without_manifest_is_rerun_and_killed_shards_resume(
    tmp_path, demo_root, ray_session, capsys, chain_recipe
):
    _a_run_of_the_chain(demo_root, tmp_path)
    tiny_dir = _only_complete(tmp_path, "tiny_models")
    (tiny_dir / "manifest.json").unlink()
    shutil.rmtree(tiny_dir / "llm")
    # As if scenes had been killed after some shards: no manifest, one shard's marker and table gone.
    scenes_dir = _only_complete(tmp_path, "scenes")
    (scenes_dir / "manifest.json").unlink()
    (scenes_dir / "_shards" / "train-00001.json").unlink()
    (scenes_dir / "tables" / "train-00001.parquet").unlink()
    capsys.readouterr()
    assert run_workflow(tmp_path, recipe=chain_recipe) == 0
    out = capsys.readouterr().out
    # download keeps its key (same scenes key) and its manifest, so it stays cached.
    assert _executed(out) == ["scenes", "tiny_models"]
    assert "resuming: 3 of 4 shards already complete" in out, out
    manifest = json.loads((scenes_dir / "manifest.json").read_text())
    assert manifest["metrics"]["num_shards_resumed"] == 3
    assert manifest["counts"]["num_out"] == 64
    keys = read_scene_table(ArtifactDir(str(scenes_dir))).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 64
    assert (tiny_dir / "llm" / "model.safetensors").is_file()


def test_mlflow_holds_a_parent_run_per_invocation_with_nested_stage_runs(tmp_path, ray_session, chain_recipe):
    assert run_workflow(tmp_path, recipe=chain_recipe) == 0
    assert run_workflow(tmp_path, "--force", "tiny_models", recipe=chain_recipe) == 0
    assert run_workflow(tmp_path, recipe=chain_recipe) == 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("llm2clip-demo")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 3
    cache_hits = []
    for parent in parents:
        assert parent.data.tags["recipe"] == "demo"
        assert parent.data.metrics["stages_ran"] + parent.data.metrics["stages_cached"] == 3
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["stage"] for r in children) == ["download", "scenes", "tiny_models"]
        by_stage = {r.data.tags["stage"]: r for r in children}
        cache_hits.append({s: r.data.tags["cache_hit"] for s, r in by_stage.items()})
        scenes_run = by_stage["scenes"]
        assert scenes_run.data.params["num_train"] == "48"
        assert by_stage["tiny_models"].data.params["llm.hidden_size"] == "128"
        key = scenes_run.data.tags["artifact_key"]
        assert (tmp_path / "scenes" / key / "manifest.json").is_file()
        assert json.loads(by_stage["tiny_models"].data.tags["input_keys"]) == {"scenes": key}
        assert scenes_run.data.metrics["rows_in"] == scenes_run.data.metrics["rows_out"] == 64
        logged = client.download_artifacts(scenes_run.info.run_id, "manifest.json", str(tmp_path / "dl"))
        assert json.loads(Path(logged).read_text())["key"] == key
    assert cache_hits == [
        {"scenes": "false", "tiny_models": "false", "download": "false"},
        {"scenes": "true", "tiny_models": "false", "download": "true"},
        {"scenes": "true", "tiny_models": "true", "download": "true"},
    ]
