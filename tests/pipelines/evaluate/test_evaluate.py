"""evaluate: the demo's short and long held-out sets scored, tabled, plotted and tracked; the standalone
CLI on Karpathy-format and zero-shot folders written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from demo import basic_scenes as scenes
from tests.conftest import REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


def test_demo_evaluation_scores_both_caption_lengths_and_reports(demo_root, demo_tracking_uri):
    folder = _complete(demo_root, "evaluate")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["details"]["scored_in"] == "ray task"  # not the driver: it needs no GPU
    results = json.loads((folder / "metrics.json").read_text())
    assert set(results) == {"scenes_short", "scenes_long"}
    for metrics in results.values():
        assert metrics["images"] == 16 == metrics["captions"]
        assert all(0 <= metrics[f"{d}_r{k}"] <= 1 for d in ("i2t", "t2i") for k in (1, 5, 10))
        assert metrics["i2t_r1"] <= metrics["i2t_r5"] <= metrics["i2t_r10"]
    table = (folder / "table.md").read_text()
    assert "| model | scenes_short I2T | scenes_short T2I | scenes_long I2T | scenes_long T2I |" in table
    assert "<table" in (folder / "table.html").read_text()
    for plot in ("recall_bars.png", "heatmap_scenes_short.png"):
        assert (folder / plot).read_bytes().startswith(PNG_MAGIC)

    client = MlflowClient(demo_tracking_uri)  # the demo job logged to the tracking server
    experiment = client.get_experiment_by_name("llm2clip-demo")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.stage = 'evaluate' and tags.cache_hit = 'false'"
    )
    assert abs(run.data.metrics["scenes_long_t2i_r1"] - results["scenes_long"]["t2i_r1"]) < 1e-9
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"table.md", "table.html", "recall_bars.png", "heatmap_scenes_short.png"} <= logged


def _scene_fixtures(root: Path) -> tuple[Path, Path]:
    """A Karpathy-format set (two captions per image, so CRA applies) and a class-folder set."""
    import random

    images = root / "images"
    images.mkdir()
    entries = []
    for index in range(12):
        rng = random.Random(1000 + index)
        scene = scenes.sample_scene(rng, f"k{index}", 3)
        scenes.render_scene(scene, 64).save(images / f"{index}.jpg")
        sentences = [{"raw": scenes.short_caption(scene, rng)}, {"raw": scenes.dense_caption(scene)}]
        entries.append({"filename": f"{index}.jpg", "split": "test", "sentences": sentences})
    (root / "dataset_scenes.json").write_text(json.dumps({"images": entries}))
    classes = root / "classes"
    for index, shape in enumerate(("circle", "square", "triangle")):
        (classes / shape).mkdir(parents=True)
        for copy in range(2):
            scene = scenes.sample_scene(random.Random(index * 10 + copy), f"c{index}{copy}", 1)
            scenes.render_scene(scene, 64).save(classes / shape / f"{copy}.jpg")
    return root / "dataset_scenes.json", classes


def test_cli_scores_a_karpathy_set_with_cra_and_a_zero_shot_set(demo_root, tmp_path):
    annotations, classes = _scene_fixtures(tmp_path)
    karpathy = {"name": "scenes_k", "format": "karpathy", "annotations": str(annotations)}
    benchmarks = "benchmarks=" + json.dumps([{**karpathy, "images": str(tmp_path / "images")}])
    templates = ["a {}", "a photo of a {}."]
    zero_shot = "zero_shot=" + json.dumps([{"name": "shapes", "root": str(classes), "templates": templates}])
    command = [
        sys.executable,
        str(REPO_ROOT / "workflows" / "cli" / "evaluate.py"),
        *("--model", str(_complete(demo_root, "train_vision") / "export")),
        *("--encoder", str(_complete(demo_root, "finetune_text") / "encoder")),
        *("--output", str(tmp_path / "out"), "--set", benchmarks, "--set", zero_shot),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["scenes_k"]["images"] == 12 and metrics["scenes_k"]["captions"] == 24
    assert 0 <= metrics["scenes_k"]["cra"] <= 1
    assert metrics["shapes"]["images"] == 6 and metrics["shapes"]["top5"] == 1.0  # 3 classes: top-5 is all
    assert "Zero-shot classification" in result.stdout and (tmp_path / "out" / "manifest.json").is_file()

    missing = subprocess.run(
        [*command[:-4], "--set", "benchmarks=[{name: x, format: karpathy, annotations: /nonexistent.json}]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0 and "/nonexistent.json: not found" in missing.stderr
