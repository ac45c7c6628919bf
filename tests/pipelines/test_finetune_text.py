"""finetune_text on Ray Train (2 CPU workers): loss falls, CRA rises, the encoder reloads, a killed
worker recovers from its checkpoint (a rerun resuming from the last one is train_vision's test: the same
Ray Train set-up, pipelines/ray_train_fit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from models.text_encoder_io import load_text_encoder
from ops.artifact_dir import ArtifactDir
from ops.config_schema import build_config
from pipelines.base import StageContext
from pipelines.finetune_text import FinetuneTextConfig, run_finetune_text
from tests.ray_train_faults import kill_a_worker_when


def _only_complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def test_demo_finetuning_beats_the_base_llm_on_cra(demo_root):
    folder = _only_complete(demo_root, "finetune_text")
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert manifest["counts"] == {"num_in": 64, "num_out": 64, "num_rejected": 0, "rejected_by_reason": {}}
    assert metrics["num_train_images"] == 48 and metrics["num_eval_pairs"] == 16
    assert metrics["cra_finetuned"] >= metrics["cra_base"] + 0.2, metrics

    encoder, tokenizer = load_text_encoder(folder / "encoder")
    assert (folder / "encoder" / "model.safetensors").is_file()
    embeddings = encoder.encode(tokenizer, ["a red circle", "a blue square"])
    assert embeddings.shape == (2, 128) and torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)

    client = MlflowClient(f"sqlite:///{demo_root}/mlflow.db")
    experiment = client.get_experiment_by_name("llm2clip-demo")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.stage = 'finetune_text' and tags.cache_hit = 'false'"
    )
    history = client.get_metric_history(run.info.run_id, "train_loss")  # logged by rank 0 from its worker
    assert len(history) == 60
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


@pytest.mark.reliability
def test_killed_worker_recovers_from_its_checkpoint(demo_root, tmp_path, ray_session, record_property):
    """MNTP first, (short, long) pairs and hard negatives on; one worker is SIGKILLed mid-training."""
    inputs = {
        "download": ArtifactDir(str(_only_complete(demo_root, "download"))),
        "tiny_models": ArtifactDir(str(_only_complete(demo_root, "tiny_models"))),
    }
    settings = {
        "batch_size_per_worker": 8,
        "checkpoint_every_steps": 4,
        "encoder": {"max_length": 160},
        "mntp_steps": 4,
        "hard_negatives": True,
        "short_dense_source": "first_sentences",
        "short_dense_sentences": 2,  # the scenes' first sentence alone is shared by many images
    }
    artifact = ArtifactDir(str(tmp_path / "ft"))
    killed: list[int] = []
    killer = kill_a_worker_when(tmp_path / "ft" / "train", lambda steps: len(steps) >= 1, killed)
    first = run_finetune_text(
        build_config(FinetuneTextConfig, {**settings, "max_steps": 12}, "finetune_text"),
        StageContext(artifact, inputs),
    )
    killer.join()
    assert len(killed) == 1
    assert first.metrics["resumed_from_step"] >= 4  # the restarted workers loaded a checkpoint
    record_property(
        "got",
        f"a Ray Train worker killed; FailureConfig restarted the group from step "
        f"{int(first.metrics['resumed_from_step'])}",
    )
    assert (tmp_path / "ft" / "mntp_model" / "_DONE").is_file()
    pairs = pq.read_table(tmp_path / "ft" / "pairs" / "train.parquet")
    assert set(pairs["kind"].to_pylist()) == {"original_dense", "short_long"}
    assert pairs.filter(pc.equal(pairs["kind"], "original_dense")).num_rows == 48
    assert "hard_negative_2" in pairs.column_names

    assert (tmp_path / "ft" / "encoder" / "encoder_config.json").is_file()
