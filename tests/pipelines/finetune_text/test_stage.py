"""finetune_text on Ray Train (2 CPU workers): loss falls, CRA rises, the encoder reloads. A killed
driver and a killed worker, with MNTP, short/long pairs and hard negatives on: tests/reliability/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from models.text_encoder_io import load_text_encoder
from pipelines.finetune_text.cra import held_out_cra
from pipelines.finetune_text.pairs import read_held_out_pairs
from tests.conftest import FINETUNE_SETTINGS, SMALL_DEMO, copy_of_demo, new_stage_dir, run_workflow
from tests.training_records import assert_same_tensors, logged_steps, sqlite_store


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
    assert next(encoder.parameters()).dtype == torch.float32  # LoRA merged and saved in fp32
    # The CRA reported is the saved encoder's, loaded as embed loads it (not the LoRA model's)
    held_out = read_held_out_pairs(str(folder / "pairs" / "eval.parquet"))
    assert held_out_cra(encoder, tokenizer, held_out) == metrics["cra_finetuned"]
    assert "cra_finetuned_unmerged" in metrics
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


@pytest.mark.slow
def test_the_same_inputs_and_seed_give_the_same_encoder_and_losses(finetune_reference, demo_root, tmp_path):
    """finetune_text twice on identical inputs (MNTP, hard negatives and both kinds of pairs on, two Ray
    Train workers): bit-identical MNTP model and encoder, the same loss at every step, the same CRA."""
    root = copy_of_demo(demo_root, tmp_path / "root")
    assert run_workflow(root, "--only", "finetune_text", overrides=(*SMALL_DEMO, *FINETUNE_SETTINGS)) == 0
    first = new_stage_dir(finetune_reference, demo_root, "finetune_text")
    second = new_stage_dir(root, demo_root, "finetune_text")
    assert first.name == second.name  # the same key: the same config and inputs
    assert_same_tensors(first / "mntp_model", second / "mntp_model")
    assert_same_tensors(first / "encoder", second / "encoder")
    for metric, steps in (("train_loss", range(1, 13)), ("train_mntp_loss", (4,))):
        logged = [logged_steps(sqlite_store(r), "finetune_text", metric) for r in (finetune_reference, root)]
        assert sorted(logged[0]) == list(steps), logged[0]
        assert logged[0] == logged[1], metric
    metrics = [json.loads((d / "manifest.json").read_text())["metrics"] for d in (first, second)]
    assert metrics[0]["cra_finetuned"] == metrics[1]["cra_finetuned"]
    assert metrics[0]["final_loss"] == metrics[1]["final_loss"]
