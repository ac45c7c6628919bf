"""Artifact IO on an S3-compatible store (moto's server on loopback, reached through the standard AWS
environment variables as every node of a cluster would): no rename there, so completion is a single put
written last; shard lists keep their s3:// scheme; model folders are staged locally where they load."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest

from ops.artifact_dir import ArtifactDir
from ops.model_files import is_remote, local_model
from ops.webdataset_io import iter_samples, list_shards


@pytest.fixture
def store_env(object_store, monkeypatch):
    for name, value in object_store.env.items():
        monkeypatch.setenv(name, value)
    return object_store


def test_a_stage_directory_on_the_store_is_complete_only_with_its_manifest(store_env, request):
    artifact = ArtifactDir(store_env.uri(f"unit/{request.node.name}/stage/key"))
    assert not artifact.is_local
    artifact.write_parquet_atomic("captions/00000.parquet", pa.table({"key": ["a", "b"]}))
    artifact.mark_shard_done("00000", {"num_in": 2, "num_out": 2})
    assert artifact.shard_done("00000") and not artifact.is_complete()
    with artifact.local_dir("encoder") as folder:  # save_pretrained-style writers get a local folder
        (Path(folder) / "config.json").write_text('{"dim": 8}')
    artifact.write_manifest({"stage": "s"})
    assert artifact.is_complete() and artifact.read_manifest() == {"stage": "s"}
    assert artifact.list() == ["_shards", "captions", "encoder", "manifest.json"]
    with artifact.local_copy("encoder") as folder:
        assert (Path(folder) / "config.json").read_text() == '{"dim": 8}'
    # Nothing staged beside the objects (no .tmp- names: a put is atomic, there is no rename to do).
    assert not [p for p in artifact.fs.find(artifact.path) if ".tmp-" in p]
    artifact.clear()
    assert not artifact.exists() and not artifact.is_complete()


def test_shards_on_the_store_are_listed_as_uris_a_worker_on_any_node_can_open(store_env, request):
    shards = ArtifactDir(store_env.uri(f"unit/{request.node.name}/shards"))
    for shard in ("00001", "00000"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for member, data in ((f"{shard}-a.txt", b"a caption"), (f"{shard}-a.json", b'{"k": 1}')):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        shards.write_bytes_atomic(f"{shard}.tar", buffer.getvalue())
    listed = list_shards(shards.uri)
    assert listed == [f"{shards.uri}/00000.tar", f"{shards.uri}/00001.tar"]
    samples = list(iter_samples(ArtifactDir(listed[1]).fs, listed[1]))
    assert [(s["key"], s["txt"], s["json"]) for s in samples] == [("00001-a", b"a caption", {"k": 1})]


def test_model_folders_on_the_store_are_staged_locally_and_other_references_pass(store_env, request):
    folder = ArtifactDir(store_env.uri(f"unit/{request.node.name}/tiny/llm"))
    folder.write_json_atomic("config.json", {"model_type": "llama"})
    assert is_remote(folder.uri) and not is_remote("owner/name") and not is_remote("/models/llm")
    with local_model(folder.uri) as local:
        assert Path(local).is_dir() and (Path(local) / "config.json").is_file()
    assert not Path(local).exists()  # a staging copy, removed after loading
    with local_model("meta-llama/Llama-3.2-1B") as reference:
        assert reference == "meta-llama/Llama-3.2-1B"


def test_markers_written_by_another_process_are_seen_after_a_listing(store_env, request):
    """s3fs caches directory listings per process: a driver that listed `_shards/` (and found shard 0
    done) must still see the marker a Ray worker writes afterwards, through another client."""
    artifact = ArtifactDir(store_env.uri(f"unit/{request.node.name}/stage/key"))
    artifact.mark_shard_done("00000", {"num_in": 1})
    assert [s["shard"] for s in artifact.shard_stats()] == ["00000"]  # listed: now cached
    assert not artifact.shard_done("00001")
    worker = store_env.filesystem()  # another client, as in a Ray worker process
    worker.pipe_file(f"{artifact.path}/_shards/00001.json", b'{"shard": "00001", "num_in": 2}')
    worker.pipe_file(f"{artifact.path}/manifest.json", b'{"stage": "s"}')
    assert artifact.shard_done("00001")
    assert [s["shard"] for s in artifact.shard_stats()] == ["00000", "00001"]
    assert artifact.is_complete() and artifact.read_manifest() == {"stage": "s"}
