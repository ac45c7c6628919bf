"""Shared, session-wide pieces: one local Ray, one small demo run, one set of tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO_ROOT / "configs" / "demo.yaml"
# Small enough for seconds per run, big enough for several shards per split.
SMALL_DEMO = (
    "scenes.num_train=48",
    "scenes.num_eval=16",
    "scenes.samples_per_shard=16",
    "download.samples_per_shard=32",
)

# Tests pick their own MLflow store; a developer's MLFLOW_TRACKING_URI must not receive test runs.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole suite; 4 logical CPUs as the demo recipe asks (see ENVIRONMENT.md)."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run_workflow(
    artifact_root: Path, *extra: str, overrides: tuple[str, ...] = SMALL_DEMO, recipe: Path = DEMO_RECIPE
) -> int:
    """workflows/full.py's main in this process, on the session's Ray."""
    from workflows.full import main

    argv = ["--config", str(recipe), "--artifacts", str(artifact_root)]
    for assignment in overrides:
        argv += ["--set", assignment]
    return main([*argv, *extra])


@pytest.fixture(scope="session")
def chain_recipe(tmp_path_factory) -> Path:
    """The demo recipe without recaption, fine-tuning and what needs them, for the caching tests that run
    the chain many times (a vLLM engine or a Ray Train run costs about a minute each on 2 cores)."""
    import yaml

    data = yaml.safe_load(DEMO_RECIPE.read_text())
    for stage in ("recaption", "finetune_text", "embed", "train_vision", "evaluate"):
        data.pop(stage)
    path = tmp_path_factory.mktemp("recipes") / "demo-no-recaption.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory, ray_session) -> Path:
    """A completed small demo chain, run once; tests that change it must use their own root."""
    root = tmp_path_factory.mktemp("demo-artifacts")
    assert run_workflow(root) == 0
    return root


@pytest.fixture(scope="session")
def tiny_models_dir(demo_root) -> Path:
    folders = [p for p in (demo_root / "tiny_models").iterdir() if (p / "manifest.json").exists()]
    assert len(folders) == 1
    return folders[0]
