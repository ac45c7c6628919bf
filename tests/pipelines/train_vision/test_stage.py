"""train_vision on Ray Train (2 CPU workers) in the demo: the loss falls, rank 0 logs to MLflow, the
export loads through from_pretrained, the vision tower alone loads as an HF model. Killed drivers and
workers: tests/reliability/test_kill_resume.py."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from transformers import CLIPVisionModel

from models.llm2clip import LLM2CLIPModel


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def test_demo_vision_training_lowers_the_loss_and_exports(demo_root, demo_tracking_uri):
    folder = _complete(demo_root, "train_vision")
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert manifest["counts"]["num_in"] == 64 and metrics["resumed_from_step"] == 0
    assert 0 <= metrics["eval_dense_i2t_r1"] <= 1 and metrics["eval_dense_eval_samples"] == 16

    client = MlflowClient(demo_tracking_uri)  # the demo job logged to the tracking server
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
    processor = json.loads((folder / "export" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 64, "width": 64}
    tower = CLIPVisionModel.from_pretrained(folder / "vision_tower", use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.allclose(
            tower(pixel_values=pixels).pooler_output, model.vision_model(pixel_values=pixels).pooler_output
        )


def test_model_card_snippet_runs_on_the_demo_export(demo_root, tmp_path):
    """The LLM2CLIP card's usage (AutoModel, trust_remote_code, CLIPImageProcessor) on a fresh demo's export,
    in a process that does not import this project: the features load_export's model gives."""
    import tarfile

    import numpy as np

    from models.llm2clip_export import load_export
    from ops.image_decode import decode_rgb
    from ops.image_transforms import eval_transform
    from testbed.hub_snippet import run_card_snippet

    folder = _complete(demo_root, "train_vision")
    llm_dim = json.loads((folder / "manifest.json").read_text())["details"]["llm_dim"]
    shard = sorted((_complete(demo_root, "download") / "shards").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
        (tmp_path / "scene.jpg").write_bytes(tar.extractfile(member).read())
    llm_features = np.random.default_rng(0).standard_normal((2, llm_dim)).astype(np.float32)

    card = run_card_snippet(folder / "export", tmp_path / "scene.jpg", llm_features)

    assert card["project_modules"] == []
    model, transform = load_export(folder / "export")
    pixels = eval_transform(decode_rgb((tmp_path / "scene.jpg").read_bytes()), transform)[None]
    with torch.no_grad():
        np.testing.assert_allclose(card["image"], model.get_image_features(pixels).numpy(), atol=1e-5)
        np.testing.assert_allclose(
            card["text"], model.get_text_features(torch.from_numpy(llm_features)).numpy(), atol=1e-5
        )
