from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ops.artifact_dir import MANIFEST_NAME, ArtifactDir
from ops.manifest import CountsMismatchError, StageCounts, build_manifest


def test_manifest_marks_completion_and_clear_removes_it_first(tmp_path):
    artifact = ArtifactDir(str(tmp_path / "stage" / "key"))
    with artifact.open("data/part.txt", "wb") as handle:
        handle.write(b"x")
    assert artifact.exists() and not artifact.is_complete()
    artifact.write_manifest({"stage": "s"})
    assert artifact.is_complete()
    assert artifact.read_manifest() == {"stage": "s"}
    assert not [p for p in Path(artifact.path).rglob("*") if ".tmp-" in p.name]
    artifact.clear()
    assert not artifact.exists()


def test_shard_markers_round_trip(tmp_path):
    artifact = ArtifactDir(str(tmp_path / "a"))
    assert not artifact.shard_done("train-00000")
    artifact.mark_shard_done("train-00000", {"num_in": 3, "num_out": 3})
    artifact.mark_shard_done("train-00001", {"num_in": 2, "num_out": 1})
    assert artifact.shard_done("train-00000")
    assert sorted(s["shard"] for s in artifact.shard_stats()) == ["train-00000", "train-00001"]
    assert sum(s["num_in"] for s in artifact.shard_stats()) == 5


def test_works_on_a_non_local_filesystem():
    # fsspec's in-memory filesystem stands in for an object store: no rename, no local paths.
    artifact = ArtifactDir(f"memory://artifacts-{uuid.uuid4().hex}/stage/key")
    assert not artifact.is_local
    with artifact.local_dir("model") as folder:
        (Path(folder) / "config.json").write_text('{"a": 1}')
    assert artifact.read_json("model/config.json") == {"a": 1}
    assert not artifact.is_complete()
    artifact.write_manifest({"ok": True})
    assert artifact.is_complete()
    assert artifact.list() == sorted(["model", MANIFEST_NAME])


def test_artifact_dir_pickles_by_uri(tmp_path):
    import pickle

    artifact = ArtifactDir(str(tmp_path / "p"))
    clone = pickle.loads(pickle.dumps(artifact))
    assert clone.uri == artifact.uri and clone.path == artifact.path


def test_counts_must_reconcile():
    assert StageCounts(num_in=5, num_out=3, num_rejected=2, rejected_by_reason={"bad": 2}).num_in == 5
    with pytest.raises(CountsMismatchError, match="in=5 != out=3 \\+ rejected=1"):
        StageCounts(num_in=5, num_out=3, num_rejected=1)
    with pytest.raises(CountsMismatchError, match="do not sum"):
        StageCounts(num_in=5, num_out=3, num_rejected=2, rejected_by_reason={"bad": 1})


def test_manifest_records_what_makes_a_run_reproducible():
    manifest = build_manifest(
        stage="s",
        key="k",
        code_version="1",
        config={"a": 1.0},
        input_keys={"up": "k0"},
        counts=StageCounts(2, 2),
        metrics={"m": 1.5},
        started_at=10.0,
        finished_at=12.5,
    )
    assert manifest["counts"] == {"num_in": 2, "num_out": 2, "num_rejected": 0, "rejected_by_reason": {}}
    assert manifest["duration_s"] == 2.5
    assert manifest["input_keys"] == {"up": "k0"} and manifest["config"] == {"a": 1}
