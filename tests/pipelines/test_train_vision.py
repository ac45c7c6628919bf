"""train_vision on Ray Train (2 CPU workers) in the demo: the loss falls, rank 0 logs to MLflow, the
export loads through from_pretrained, the vision tower alone loads as an HF model, a rerun with more steps
resumes from the last checkpoint, and a SIGKILLed worker recovers from its checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from transformers import CLIPVisionModel

from models.llm2clip import LLM2CLIPModel
from ops.artifact_dir import ArtifactDir
from ops.config_schema import build_config
from pipelines.base import StageContext
from pipelines.train_vision import TrainVisionConfig, run_train_vision
from tests.ray_train_faults import kill_a_worker_when


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def test_demo_vision_training_lowers_the_loss_and_exports(demo_root):
    folder = _complete(demo_root, "train_vision")
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert manifest["counts"]["num_in"] == 64 and metrics["resumed_from_step"] == 0
    assert 0 <= metrics["eval_dense_i2t_r1"] <= 1 and metrics["eval_dense_eval_samples"] == 16

    client = MlflowClient(f"sqlite:///{demo_root}/mlflow.db")
    experiment = client.get_experiment_by_name("llm2clip-demo")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.stage = 'train_vision' and tags.cache_hit = 'false'"
    )
    history = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(5, 41, 5))
    assert history[-1].value < 0.7 * history[0].value, [m.value for m in history]
    assert client.get_metric_history(run.info.run_id, "eval_dense_t2i_r1")  # the periodic hook ran

    model = LLM2CLIPModel.from_pretrained(folder / "export").eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        image = model.get_image_features(pixels)
        text = model.get_text_features(torch.randn(2, manifest["details"]["llm_dim"]))
    assert image.shape == text.shape == (2, 64)
    assert json.loads((folder / "export" / "preprocessor_config.json").read_text())["image_size"] == 64
    tower = CLIPVisionModel.from_pretrained(folder / "vision_tower", use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.allclose(
            tower(pixel_values=pixels).pooler_output, model.vision_model(pixel_values=pixels).pooler_output
        )


def test_rerun_resumes_and_a_killed_worker_recovers_from_its_checkpoint(demo_root, tmp_path, ray_session):
    """Continue the demo's run (checkpoint at step 40) to step 70; SIGKILL a worker on the way: the new
    worker group must resume from a checkpoint past 40, not from the start."""
    source = _complete(demo_root, "train_vision")
    shutil.copytree(source / "train", tmp_path / "tv" / "train")
    inputs = {
        stage: ArtifactDir(str(_complete(demo_root, stage))) for stage in ("download", "embed", "tiny_models")
    }
    recipe = json.loads((source / "manifest.json").read_text())["config"]
    settings = {**recipe, "max_steps": 70, "eval_every_steps": 0, "checkpoint_every_steps": 2}
    config = build_config(TrainVisionConfig, settings, "train_vision")
    killed: list[int] = []
    killer = kill_a_worker_when(tmp_path / "tv" / "train", lambda steps: any(s > 40 for s in steps), killed)
    outcome = run_train_vision(config, StageContext(ArtifactDir(str(tmp_path / "tv")), inputs))
    killer.join()
    assert len(killed) == 1
    assert outcome.metrics["resumed_from_step"] > 40
    assert (tmp_path / "tv" / "export" / "model.safetensors").is_file()
