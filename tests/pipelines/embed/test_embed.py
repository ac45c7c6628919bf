"""embed: sidecars keyed 1:1 to the image shards, equal to the encoder called directly, resumable."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models.text_encoder_io import load_text_encoder
from ops.embedding_sidecar import field_matrix
from ops.webdataset_io import iter_samples
from testbed.waiting import kill_and_wait_gone, processes_matching, wait_until
from tests.conftest import REPO_ROOT


def _only_complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def _tar_samples(tar: Path) -> list[dict]:
    return [s for s in iter_samples(fsspec.filesystem("file"), str(tar)) if "jpg" in s]


def test_demo_sidecars_match_image_keys_and_the_encoder(demo_root):
    embed = _only_complete(demo_root, "embed")
    shards = _only_complete(demo_root, "download") / "shards"
    encoder, tokenizer = load_text_encoder(_only_complete(demo_root, "finetune_text") / "encoder")
    manifest = json.loads((embed / "manifest.json").read_text())
    assert manifest["counts"] == {"num_in": 64, "num_out": 64, "num_rejected": 0, "rejected_by_reason": {}}
    assert manifest["details"]["dim"] == 128 and manifest["details"]["dtype"] == "float16"
    assert manifest["metrics"]["num_captions"] == 128 and 0 <= manifest["metrics"]["padding_share"] < 1
    tars = sorted(shards.glob("*.tar"))
    assert sorted(p.stem for p in (embed / "sidecars").glob("*.parquet")) == [t.stem for t in tars]
    for tar in tars:
        samples = _tar_samples(tar)
        table = pq.read_table(embed / "sidecars" / f"{tar.stem}.parquet")
        assert table["key"].to_pylist() == [s["key"] for s in samples]  # same keys, same order
        originals = [s["txt"].decode() for s in samples]
        denses = [s["json"]["dense_caption"] for s in samples]
        direct = {
            "original": encoder.encode(tokenizer, originals),
            "dense": encoder.encode(tokenizer, denses),
        }
        for field, expected in direct.items():
            stored, present = field_matrix(table, field)
            assert present.all()
            assert torch.allclose(torch.from_numpy(stored), expected, atol=2e-3), field


def write_shard(path: Path, start: int, count: int, drop_dense: set[int]) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + count):
            words = " ".join(["red circle", "blue square", "green star"][: 1 + i % 3] * (1 + i % 5))
            members = {"jpg": b"\xff\xd8 not decoded by embed", "txt": f"a photo {i}".encode()}
            meta = {} if i in drop_dense else {"dense_caption": f"A scene with {words}."}
            members["json"] = json.dumps(meta).encode()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _kill_an_embedder_actor_after(output: Path, markers: int, killed: list[int]) -> threading.Thread:
    """SIGKILL the Ray Data actor that embeds (a Ray worker) once `markers` shards are complete."""

    def watch() -> None:
        try:
            done = lambda: len(list(output.glob("_shards/*.json"))) >= markers  # noqa: E731
            wait_until(done, 240, "shard markers", 0.02)
            actors = wait_until(lambda: processes_matching("ShardEmbedder"), 60, "the embedding actor", 0.02)
        except AssertionError:
            return  # nothing killed: the test's check of `killed` says so
        actors[0].kill()
        killed.append(actors[0].pid)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.reliability
def test_cli_resumes_after_a_kill_without_gaps_or_duplicates(
    demo_root, tmp_path, ray_cluster, record_property
):
    """The driver is SIGKILLed after a shard; the resumed run loses its embedding actor (a Ray worker)
    after another shard, and Ray Data restarts it."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in range(6):
        write_shard(shards / f"{shard:05d}.tar", shard * 48, 48, drop_dense={5, 100})
    output = tmp_path / "embeddings"
    encoder = _only_complete(demo_root, "finetune_text") / "encoder"
    command = [
        sys.executable,
        str(REPO_ROOT / "workflows" / "cli" / "embed.py"),
        *("--shards", str(shards), "--encoder", str(encoder), "--output", str(output)),
        *("--set", "batch_size=1", "--set", "export_reference_layout=true", "--num-cpus", "2"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_cluster.address  # joins the suite's cluster, as a submitted job would
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(output.glob("_shards/*.json")):
        assert first.poll() is None, first.stderr.read()[-4000:]
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the driver; Ray then ends its job's encoder actor
    first.wait(timeout=60)
    # An actor that Ray started in its own process group outlives the driver by a moment and may finish
    # the shard in hand; end it and wait until it is gone before taking stock.
    kill_and_wait_gone(processes_matching(str(output), "ShardEmbedder"))
    done_before = sorted(p.stem for p in output.glob("_shards/*.json"))
    assert 1 <= len(done_before) < 6 and not (output / "manifest.json").exists()
    kept = {s: (output / "sidecars" / f"{s}.parquet").stat().st_mtime_ns for s in done_before}

    killed: list[int] = []
    killer = _kill_an_embedder_actor_after(output, len(done_before) + 1, killed)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    killer.join(timeout=10)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"resuming: {len(done_before)} of 6 shards already complete" in second.stdout
    assert len(killed) == 1, "the resumed run finished before its actor could be killed"
    assert {s: (output / "sidecars" / f"{s}.parquet").stat().st_mtime_ns for s in done_before} == kept
    for tar in sorted(shards.glob("*.tar")):
        keys = [s["key"] for s in _tar_samples(tar)]
        table = pq.read_table(output / "sidecars" / f"{tar.stem}.parquet")
        assert table["key"].to_pylist() == keys
        with tarfile.open(output / "reference" / f"{tar.stem}_text_embeddings.tar") as reference:
            members = reference.getnames()
            first = np.frombuffer(reference.extractfile(f"{keys[0]}.shortsv_captions").read(), np.float32)
        assert [m.split(".")[0] for m in members if m.endswith(".shortsv_captions")] == keys
        assert np.array_equal(first, field_matrix(table, "original")[0][0])
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["counts"]["num_in"] == 288 and manifest["counts"]["num_rejected"] == 2
    assert manifest["counts"]["rejected_by_reason"] == {"missing_dense": 2}
    rejected = pq.read_table(output / "rejected" / "00000.parquet").to_pylist()
    assert [r["key"] for r in rejected] == ["000005"]
    _, present = field_matrix(pq.read_table(output / "sidecars" / "00000.parquet"), "dense")
    assert not present[5] and present.sum() == 47
    record_property(
        "got",
        f"driver killed after {len(done_before)} of 6 shards, an embedding actor killed in the rerun; "
        "288 samples, each sidecar row once, in tar order",
    )
