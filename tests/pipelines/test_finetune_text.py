"""finetune_text on Ray Train (2 CPU workers): loss falls, CRA rises, the encoder reloads. A killed
driver and a killed worker, with MNTP, short/long pairs and hard negatives on: tests/reliability/."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from models.text_encoder_io import load_text_encoder


def _only_complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def test_demo_finetuning_beats_the_base_llm_on_cra(demo_root, demo_tracking_uri):
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

    client = MlflowClient(demo_tracking_uri)  # the demo job logged to the tracking server
    experiment = client.get_experiment_by_name("llm2clip-demo")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.stage = 'finetune_text' and tags.cache_hit = 'false'"
    )
    history = client.get_metric_history(run.info.run_id, "train_loss")  # logged by rank 0 from its worker
    assert len(history) == 60
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
