"""An official-layout LLM2CLIP checkpoint (tiny, built from the release's documented layout) converts into
this project's export with the same image and text features; --dry-run lists the mapping and writes
nothing; the evaluate CLI scores the converted model with an LLM2Vec-format encoder (llm2vec preset)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.llm2clip_export import load_export
from models.official_llm2clip import convert_official, tower_prefix
from testbed.official_layout import VISION, write_llm2vec_folder, write_official_vision_checkpoint
from tests.conftest import REPO_ROOT
from tests.pipelines.evaluate.test_evaluate import _scene_fixtures

LLM_DIM = 128  # the tiny Llama's width: the official adapter has no input projection
CONVERT = [sys.executable, str(REPO_ROOT / "workflows" / "cli" / "convert_official.py")]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    return folder, write_official_vision_checkpoint(folder, LLM_DIM)


def _features(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(3, 3, VISION["image_size"], VISION["image_size"], generator=generator)
    llm = torch.randn(3, LLM_DIM, generator=generator)
    with torch.no_grad():
        return model.get_image_features(pixels), model.get_text_features(llm)


def test_converted_model_gives_the_official_features(official):
    folder, reference = official
    model, mapping = convert_official(folder)
    assert model.config.adapter_input_projection is False and model.config.adapter_output_bias is True
    assert (model.config.adapter_width, model.config.adapter_expansion) == (LLM_DIM, 2)
    assert model.config.adapter_depth == 4 and model.config.projection_dim == 16
    assert all(m.ours for m in mapping)  # every official weight has a place here
    for ours, theirs in zip(_features(model), _features(reference)):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_unknown_or_missing_weights_are_errors(official, tmp_path):
    folder, _ = official
    weights = load_file(str(folder / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file({**weights, "text_adapter.extra.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"text_adapter\.extra\.weight"):
        convert_official(tmp_path)
    del weights["visual_projection.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"no weight for \['visual_projection\.weight'\]"):
        convert_official(tmp_path)


def test_cli_dry_run_lists_the_mapping_and_writes_nothing(official, tmp_path):
    folder, _ = official
    result = subprocess.run(
        [*CONVERT, "--checkpoint", str(folder), "--output", str(tmp_path / "out"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["text_adapter.adaptor.0.fn.0.weight", "text_adapter.blocks.0.mlp.0.weight", "256x128"] in lines
    assert ["text_adapter.adaptor.5.bias", "text_adapter.output.bias", "16"] in lines
    assert ["vision_model.pre_layrnorm.weight", f"{tower_prefix()}pre_layrnorm.weight", "64"] in lines
    assert '"adapter_input_projection": false' in result.stdout
    assert not (tmp_path / "out").exists()


def test_cli_converts_and_evaluate_scores_it_with_the_llm2vec_preset(official, tmp_path):
    folder, reference = official
    export = tmp_path / "export"
    result = subprocess.run(
        [*CONVERT, "--checkpoint", str(folder), "--output", str(export)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model, transform = load_export(export)
    assert transform.size_px == VISION["image_size"]
    for ours, theirs in zip(_features(model), _features(reference)):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)

    encoder, _, _ = write_llm2vec_folder(tmp_path / "encoder")
    annotations, _ = _scene_fixtures(tmp_path)
    benchmark = {"name": "scenes_k", "format": "karpathy", "annotations": str(annotations)}
    command = [
        sys.executable,
        str(REPO_ROOT / "workflows" / "cli" / "evaluate.py"),
        *("--model", str(export), "--encoder", str(encoder), "--output", str(tmp_path / "out")),
        *("--set", "encoder_preset=llm2vec"),
        *("--set", "benchmarks=" + json.dumps([{**benchmark, "images": str(tmp_path / "images")}])),
    ]
    evaluated = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["scenes_k"]
    assert metrics["images"] == 12 and metrics["captions"] == 24
    assert all(0 <= metrics[f"{d}_r{k}"] <= 1 for d in ("i2t", "t2i") for k in (1, 5, 10))
