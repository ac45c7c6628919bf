"""The MLflow UI as users open it: the `mlflow server` the demo job logged to, pages rendered by a real
headless Chromium (Debian's package; `make test` installs it where it can), asserting on what it shows."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from testbed.demo_run import DEMO_STAGES
from tests.conftest import DEMO_SUBMISSION_ID

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make browser installs it)")


@pytest.fixture(scope="module")
def mlflow_ui(demo_job):
    """The tracking server the demo job logged to (`mlflow server`, SQLite backend, artifacts on the
    object store): it serves the UI too. Yields (base url, tracking uri)."""
    return demo_job.tracking_uri, demo_job.tracking_uri


def rendered_text(url: str, profile: Path) -> str:
    """The page's visible text after its JavaScript ran (the UI is a single-page app fed by the REST API)."""
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    # The flags keep Chromium off the network (background services) and off a GPU; as root it needs
    # --no-sandbox. The virtual time budget lets the app fetch and render before the DOM is dumped.
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1600,1200",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


def _the_jobs_runs(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("llm2clip-demo")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("ray_job_submission_id") == DEMO_SUBMISSION_ID)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return experiment, runs, parent, children


def test_the_runs_page_lists_the_submitted_jobs_parent_run(mlflow_ui, tmp_path):
    url, store = mlflow_ui
    experiment, runs, parent, _ = _the_jobs_runs(store)
    page = rendered_text(f"{url}/#/experiments/{experiment.experiment_id}/runs", tmp_path / "profile")
    assert "llm2clip-demo" in page
    # Nested stage runs are folded under their parent in this table; the count covers them all.
    assert f"{len(runs)} matching runs" in page
    assert re.search(rf"\b{re.escape(parent.info.run_name)}\b .* full\.py", page), page[:3000]


def test_the_parent_run_page_names_every_stage_run_and_the_ray_job(mlflow_ui, tmp_path):
    url, store = mlflow_ui
    experiment, _, parent, children = _the_jobs_runs(store)
    assert sorted(r.info.run_name for r in children) == sorted(DEMO_STAGES)
    page = rendered_text(
        f"{url}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}", tmp_path / "profile"
    )
    listed = re.search(r"Child runs (.*?) Source", page)
    assert listed, page[:3000]
    assert sorted(name.strip() for name in listed.group(1).split(",")) == sorted(DEMO_STAGES)
    assert f"ray_job_submission_id : {DEMO_SUBMISSION_ID}" in page
    assert "stages_ran 8" in page


def test_a_stage_run_page_shows_its_metrics_and_its_parent(mlflow_ui, tmp_path):
    url, store = mlflow_ui
    experiment, _, parent, children = _the_jobs_runs(store)
    evaluate = next(r for r in children if r.info.run_name == "evaluate")
    page = rendered_text(
        f"{url}/#/experiments/{experiment.experiment_id}/runs/{evaluate.info.run_id}", tmp_path / "profile"
    )
    assert f"Parent run {parent.info.run_name}" in page
    recall = evaluate.data.metrics["scenes_long_i2t_r5"]
    shown = re.search(r"scenes_long_i2t_r5 ([0-9.]+)", page)
    assert shown and float(shown.group(1)) == pytest.approx(recall)


def test_the_link_the_workflow_prints_opens_the_experiment_on_its_training_runs(
    mlflow_ui, demo_job, tmp_path
):
    """Not on MLflow 3's GenAI overview (traces, "Detect Issues"): the experiment is tagged as model
    training, and the page the job's log points to asks for the model-training view."""
    url, store = mlflow_ui
    experiment, runs, _, _ = _the_jobs_runs(store)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    printed = re.search(rf"^  ({re.escape(url)}/#/experiments/\S+)$", demo_job.output, flags=re.M)
    assert printed, demo_job.output[-2000:]
    assert printed.group(1) == f"{url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    page = rendered_text(printed.group(1), tmp_path / "profile")
    assert f"{len(runs)} matching runs" in page, page[:3000]
    assert "Detect Issues" not in page, page[:3000]


def test_the_vision_runs_eval_chart_has_one_point_per_evaluation_in_step_order(mlflow_ui, tmp_path):
    """The periodic evaluation at step 20 and the final one at step 40, each once: the stage's headline
    metrics (the manifest's) do not add the final value again at step 0."""
    url, store = mlflow_ui
    experiment, _, _, children = _the_jobs_runs(store)
    train_vision = next(r for r in children if r.info.run_name == "train_vision")
    client = MlflowClient(store)
    history = client.get_metric_history(train_vision.info.run_id, "eval_dense_i2t_r1")
    assert [m.step for m in sorted(history, key=lambda m: (m.step, m.timestamp))] == [20, 40]
    final = max(history, key=lambda m: m.step).value
    assert train_vision.data.metrics["eval_dense_i2t_r1"] == pytest.approx(final)  # latest = step 40's
    assert [m.step for m in client.get_metric_history(train_vision.info.run_id, "final_loss")] == [0]
    run_page = f"{url}/#/experiments/{experiment.experiment_id}/runs/{train_vision.info.run_id}"
    page = rendered_text(run_page, tmp_path / "profile")
    shown = re.search(r"eval_dense_i2t_r1 ([0-9.]+)", page)
    assert shown and float(shown.group(1)) == pytest.approx(final), page[:3000]
