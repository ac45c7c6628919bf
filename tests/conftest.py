"""Shared, session-wide pieces: one Ray cluster on loopback, one small demo run submitted to it as a Ray job,
one set of tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ray_cluster import use_a_test_token

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO_ROOT / "configs" / "demo.yaml"
# The demo recipe's stages, in chain order.
DEMO_STAGES = (
    "scenes",
    "tiny_models",
    "download",
    "recaption",
    "finetune_text",
    "embed",
    "train_vision",
    "evaluate",
)
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
# Before anything imports Ray: Ray reads its auth mode once per process.
use_a_test_token()


@pytest.fixture(scope="session")
def ray_cluster():
    """A real cluster for the whole suite: `ray start --head` on loopback with the dashboard's job server,
    4 logical CPUs as the demo recipe asks (see ENVIRONMENT.md); stopped at the end of the session."""
    from tests.ray_cluster import LocalRayCluster

    cluster = LocalRayCluster(num_cpus=4).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def ray_session(ray_cluster):
    """This process joins the suite's cluster as a driver (Ray Data and Ray Train tests run from here)."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address=ray_cluster.address, log_to_driver=False)
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


DEMO_SUBMISSION_ID = "llm2clip-demo-suite"


@pytest.fixture(scope="session")
def demo_job(tmp_path_factory, ray_cluster, ray_session):
    """The small demo chain as users run it: `ray job submit --working-dir . -- python workflows/full.py
    --config configs/demo.yaml` against the suite's cluster. Run once; returns (artifact root, job output)."""
    root = tmp_path_factory.mktemp("demo-artifacts")
    entrypoint = ["python", "workflows/full.py", "--config", "configs/demo.yaml", "--artifacts", str(root)]
    for assignment in SMALL_DEMO:
        entrypoint += ["--set", assignment]
    finished = ray_cluster.submit(entrypoint, REPO_ROOT, DEMO_SUBMISSION_ID, timeout_s=900)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, f"ray job submit failed:\n{output[-8000:]}\n{ray_cluster.log_tail()}"
    return root, output


@pytest.fixture(scope="session")
def demo_root(demo_job) -> Path:
    """A completed small demo chain; tests that change it must use their own root."""
    return demo_job[0]


@pytest.fixture(scope="session")
def tiny_models_dir(demo_root) -> Path:
    folders = [p for p in (demo_root / "tiny_models").iterdir() if (p / "manifest.json").exists()]
    assert len(folders) == 1
    return folders[0]
