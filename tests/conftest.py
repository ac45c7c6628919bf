"""Shared, session-wide pieces: one Ray cluster on loopback, one small demo run submitted to it as a Ray job,
one set of tiny models."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from testbed.demo_run import DEMO_RECIPE, ON_THE_CLUSTER, REPO_ROOT, SMALL_DEMO
from testbed.ray_cluster import use_a_test_token
from testbed.suite_services import SuiteServices, interrupt_on_sigterm

# Tests pick their own MLflow store; a developer's MLFLOW_TRACKING_URI must not receive test runs.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Ray's documented opt-out of usage stats, for this process and every node and job it starts: without it
# Ray Data's usage poller queries a Prometheus that the suite does not run, every 10 s, and prints a
# traceback for each failed query after pytest's summary. (The workflow switches off only Ray Data's part,
# and only when no Prometheus is configured: workflows/ray_runtime.py.)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default, so each run's end and each killed worker
# are seen up to 2 s late; the suite's many short runs and kills wait for them. Nodes inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Ray Train's preemption watcher is one more actor process per training run (3-4 s of a run's start on 2
# cores, measured); nothing drains the suite's loopback nodes. Nodes inherit it.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Before anything imports Ray: Ray reads its auth mode once per process.
use_a_test_token()


# The suite-wide demo run: a test whose fixtures build on it is end-to-end.
END_TO_END_FIXTURE = "demo_job"
# A test that asks for any of these uses the cluster (a driver of its own or this process's).
CLUSTER_FIXTURES = frozenset({"ray_cluster", "ray_session"})
# The services and the demo job, started once (testbed/suite_services.py says when and why in the background).
SUITE = SuiteServices()


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: builds on the suite-wide demo job (runs after the unit tests)")
    interrupt_on_sigterm()


def _phase(item) -> int:
    """0: unit tests that never touch the cluster (they run beside the demo job), 1: unit tests that use it
    (they wait for the job to end), 2: end-to-end tests."""
    if END_TO_END_FIXTURE in item.fixturenames:
        return 2
    return 1 if CLUSTER_FIXTURES & set(item.fixturenames) else 0


def pytest_collection_modifyitems(config, items):
    """Unit tests first, end-to-end tests last (each group in collection order): no unit test waits for
    the demo job's results, and `pytest -m "not e2e"` runs the unit tests alone."""
    for item in items:
        if END_TO_END_FIXTURE in item.fixturenames:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=_phase)


def pytest_collection_finish(session):
    """With end-to-end tests selected, start the services and the demo job now, in the background."""
    if session.config.option.collectonly:
        return
    if any(END_TO_END_FIXTURE in item.fixturenames for item in session.items):
        SUITE.start_in_background(_submit_demo_job)


def pytest_sessionfinish(session, exitstatus):
    SUITE.stop()  # also what an interrupted session started and no fixture tore down


@pytest.fixture(scope="session")
def cluster_and_services():
    """A real two-node Ray cluster, an S3-compatible object store and an MLflow tracking server, all on
    loopback, started side by side and stopped at the end of the session. See ray_cluster, object_store
    and mlflow_server."""
    yield SUITE.services()
    SUITE.stop()


@pytest.fixture(scope="session")
def ray_cluster(cluster_and_services):
    """A real two-node cluster for the whole suite, on loopback: `ray start --head` (with the dashboard's
    job server) and a second node joined with `ray start --address` and a resource of its own (`node2`);
    4 logical CPUs in all, as the demo recipe asks (more than the 2 cores, so that Ray Data's actor
    pipelines never starve). Handed out once the demo job, when it started in the background, has ended."""
    return SUITE.cluster_for_a_test()


@pytest.fixture(scope="session")
def object_store(cluster_and_services):
    """An S3-compatible object store on loopback (moto's server mode) with one bucket."""
    return cluster_and_services[1]


@pytest.fixture(scope="session")
def mlflow_server(cluster_and_services):
    """`mlflow server`: a SQLite backend, run artifacts on the object store; what the demo job logs to."""
    return cluster_and_services[2]


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
DEMO_PREFIX = "demo"  # the demo job's artifact root in the object store's bucket


@dataclasses.dataclass(frozen=True)
class DemoJob:
    root_uri: str  # s3://bucket/demo
    output: str  # what `ray job submit` printed
    tracking_uri: str  # the MLflow server it logged to
    placement: dict[str, list[str]]  # what ran -> ids of the nodes it ran on (Ray's state API)


def _submit_demo_job(services: tuple) -> DemoJob:
    """The small demo chain as users run it on a cluster: `ray job submit --working-dir . -- python
    workflows/full.py --config configs/demo.yaml --artifacts s3://...` against the suite's two-node
    cluster, artifacts on the object store, MLflow on the tracking server. The nodes hold no credentials:
    the job brings them (`--runtime-env-json`)."""
    from testbed.job_placement import job_placement

    cluster, store, server = services
    root_uri = store.uri(DEMO_PREFIX)
    entrypoint = ["python", "workflows/full.py", "--config", "configs/demo.yaml", "--artifacts", root_uri]
    for assignment in (*SMALL_DEMO, *ON_THE_CLUSTER):
        entrypoint += ["--set", assignment]
    env_vars = {**store.env, "MLFLOW_TRACKING_URI": server.url}
    finished = cluster.submit(
        entrypoint, REPO_ROOT, DEMO_SUBMISSION_ID, timeout_s=900, runtime_env={"env_vars": env_vars}
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, f"ray job submit failed:\n{output[-8000:]}\n{cluster.log_tail()}"
    # Read now: later tests add tasks and actors of their own.
    placement = job_placement(cluster.dashboard_url, DEMO_SUBMISSION_ID)
    return DemoJob(root_uri, output, server.url, placement)


@pytest.fixture(scope="session")
def demo_job(cluster_and_services) -> DemoJob:
    """The demo job's outcome, submitted once (in the background when the session started it there)."""
    return SUITE.demo_job(_submit_demo_job)


@pytest.fixture(scope="session")
def demo_root(demo_job, object_store, tmp_path_factory) -> Path:
    """A local copy of the completed demo chain (it lives on the object store), for the tests that read
    its files; tests that change it must use their own copy. Its MLflow runs are on the tracking server."""
    local = tmp_path_factory.mktemp("demo-artifacts")
    object_store.filesystem().get(f"{object_store.bucket}/{DEMO_PREFIX}/", f"{local}/", recursive=True)
    return local


@pytest.fixture(scope="session")
def demo_tracking_uri(demo_job) -> str:
    return demo_job.tracking_uri


# finetune_text at a small size with every phase on: MNTP first (a checkpointed phase of its own),
# (short, long) pairs beside (original, dense), and hard negatives; 12 steps with a checkpoint every 4.
FINETUNE_SETTINGS = (
    "finetune_text.max_steps=12",
    "finetune_text.checkpoint_every_steps=4",
    "finetune_text.batch_size_per_worker=8",
    "finetune_text.mntp_steps=4",
    "finetune_text.negatives=mined",
    "finetune_text.short_dense_source=first_sentences",
    "finetune_text.short_dense_sentences=2",  # the scenes' first sentence alone is shared by many images
)


def copy_of_demo(demo_root: Path, root: Path) -> Path:
    """The finished demo without its MLflow store, so that runs on the copy land in a store of their own
    (`<root>/mlflow.db`)."""
    shutil.copytree(demo_root, root, ignore=shutil.ignore_patterns("mlflow.db", "mlflow-artifacts"))
    return root


@pytest.fixture(scope="session")
def finetune_reference(demo_root, ray_session, tmp_path_factory) -> Path:
    """An uninterrupted `--only finetune_text` with FINETUNE_SETTINGS on a copy of the demo: what a rerun
    on the same inputs, and a killed and resumed run, must equal. Returns the copy's root."""
    root = copy_of_demo(demo_root, tmp_path_factory.mktemp("finetune-reference") / "root")
    assert run_workflow(root, "--only", "finetune_text", overrides=(*SMALL_DEMO, *FINETUNE_SETTINGS)) == 0
    return root


def new_stage_dir(root: Path, demo_root: Path, stage: str) -> Path:
    """The one directory of `stage` under root that the demo does not have (a run with other settings)."""
    demo_names = {d.name for d in (demo_root / stage).iterdir()}
    (folder,) = [d for d in (root / stage).iterdir() if d.is_dir() and d.name not in demo_names]
    return folder


@pytest.fixture(scope="session")
def tiny_models_dir(demo_root) -> Path:
    folders = [p for p in (demo_root / "tiny_models").iterdir() if (p / "manifest.json").exists()]
    assert len(folders) == 1
    return folders[0]
