"""finetune_text and train_vision run alone from their CLIs on any shard folder: the demo's download
shards, its tiny LLM and vision tower, and its embed output stand in for a user's own, and each CLI
writes a complete artifact (manifest, encoder / export) that the rest of the chain can use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def _run(cli: str, args: list[str], ray_address: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_address  # joins the suite's cluster, as a submitted job would
    command = [sys.executable, str(REPO_ROOT / "workflows" / "cli" / cli), *args, "--num-cpus", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_finetune_text_and_train_vision_run_alone_on_a_shard_folder(demo_root, tmp_path, ray_cluster):
    shards = _complete(demo_root, "download") / "shards"
    models = _complete(demo_root, "tiny_models")
    common = ["--config", str(REPO_ROOT / "configs" / "demo.yaml"), "--set", "num_workers=1"]

    encoder_out = tmp_path / "encoder-run"
    done = _run(
        "finetune_text.py",
        [
            *("--shards", str(shards), "--base-model", str(models / "llm"), "--output", str(encoder_out)),
            *common,
            *("--set", "max_steps=4", "--set", "checkpoint_every_steps=4", "--set", "mntp_steps=0"),
        ],
        ray_cluster.address,
    )
    manifest = json.loads((encoder_out / "manifest.json").read_text())
    assert manifest["counts"]["num_in"] == manifest["counts"]["num_out"] + manifest["counts"]["num_rejected"]
    assert (encoder_out / "encoder" / "encoder_config.json").exists()
    assert "training pairs; CRA" in done.stdout

    vision_out = tmp_path / "vision-run"
    done = _run(
        "train_vision.py",
        [
            *("--shards", str(shards), "--embeddings", str(_complete(demo_root, "embed"))),
            *("--vision-model", str(models / "vision"), "--output", str(vision_out)),
            *common,
            *("--set", "max_steps=4", "--set", "checkpoint_every_steps=4", "--set", "eval_every_steps=4"),
        ],
        ray_cluster.address,
    )
    manifest = json.loads((vision_out / "manifest.json").read_text())
    assert manifest["metrics"]["num_train_samples"] > 0
    assert (vision_out / "export" / "config.json").exists()
    assert "-> " in done.stdout and "export" in done.stdout


def test_a_caption_table_becomes_status_tables_the_stage_reads(tmp_path):
    from ops.artifact_dir import ArtifactDir
    from ops.stage import StageContext
    from pipelines.finetune_text.config import FinetuneTextConfig
    from pipelines.finetune_text.pairs import image_captions
    from workflows.cli.finetune_text import pairs_as_status_tables

    rows = [{"caption": f"photo {i}", "dense_caption": f"a long caption of photo {i}"} for i in range(250)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = FinetuneTextConfig()
    ctx = StageContext(ArtifactDir(str(tmp_path / "out")), {})
    shards = pairs_as_status_tables(str(tmp_path / "pairs.jsonl"), config, ctx)
    images = [r for table in image_captions(shards, None, config) for r in table.to_pylist()]
    assert [(r["original"], r["dense"]) for r in images] == [(r["caption"], r["dense_caption"]) for r in rows]
