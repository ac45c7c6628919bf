"""MLflow: one parent run per workflow invocation, one nested run per stage (cache hits included)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from ops.artifact_dir import ArtifactDir
from ops.hashing import flatten

MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values
# What an experiment is for, as MLflow 3 records it: a training experiment, not a GenAI one. MLflow 3.17's
# own UI decides its view per browser instead (a "GenAI | Model training" switch, GenAI by default, or the
# `workflowType` query parameter), so the links this project prints carry that parameter too.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def experiment_link(tracking_uri: str, experiment_id: str) -> str:
    """How to open the experiment on its runs table: the tracking server's page, or for a SQLite store the
    `mlflow ui` command and the page it will serve."""
    page = f"/#/experiments/{experiment_id}?{MODEL_TRAINING_VIEW}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"  {tracking_uri.rstrip('/')}{page}"
    return f"  mlflow ui --backend-store-uri {tracking_uri}\n  then {LOCAL_UI}{page}"


def default_tracking_uri(artifact_root: str) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite file beside the artifacts (local roots only)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = ArtifactDir(artifact_root)
    if not root.is_local:
        raise ValueError(
            f"artifact root {artifact_root} is not local: set MLFLOW_TRACKING_URI to a tracking server "
            "(mlflow server) that every node can reach"
        )
    Path(root.path).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(root.path).resolve()}/mlflow.db"


class WorkflowTracker:
    """Owns the MLflow runs of one invocation; stages get a metrics logger bound to their run."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str):
        self.tracking_uri = tracking_uri
        # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; close() restores the caller's value so
        # that a later invocation in the same process picks its own default store.
        self._previous_env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(tracking_uri)
        # Two invocations starting at once on one SQLite store would both run its schema migrations and
        # both create the experiment; one at a time, the second finds both done.
        sqlite_file = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else ""
        with ArtifactDir(sqlite_file).exclusive() if sqlite_file else contextlib.nullcontext():
            self.client = MlflowClient(tracking_uri)
            self.client.search_experiments(max_results=1)  # creates and migrates the store
            existing = self.client.get_experiment_by_name(experiment)
            if existing is None:
                # Keep run artifacts under the artifact root, not in whatever directory we started in.
                location = None
                root = ArtifactDir(artifact_root)
                if tracking_uri.startswith("sqlite:") and root.is_local:
                    location = (Path(root.path).resolve() / "mlflow-artifacts").as_uri()
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
                )
            else:
                self.experiment_id = existing.experiment_id
                if EXPERIMENT_KIND_TAG not in existing.tags:  # made by an older version, or by hand
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        self.parent_run_id: str | None = None

    def __enter__(self) -> WorkflowTracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        mlflow.set_tracking_uri(self._previous_env_uri)

    @contextlib.contextmanager
    def parent_run(self, run_name: str, tags: dict[str, str], recipe_text: str) -> Iterator[str]:
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=tags) as run:
            self.parent_run_id = run.info.run_id
            mlflow.log_text(recipe_text, "recipe.yaml")
            yield run.info.run_id

    @contextlib.contextmanager
    def stage_run(self, stage: str, config: Any, tags: dict[str, str]) -> Iterator[str]:
        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=stage, nested=True, tags={"stage": stage, **tags}
        ) as run:
            params = {k: _param_value(v) for k, v in flatten(config).items()}
            if params:
                mlflow.log_params(params)
            yield run.info.run_id

    def metrics_logger(self, run_id: str):
        def log(metrics: dict[str, float], step: int | None = None) -> None:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            if numeric:
                mlflow.log_metrics(numeric, step=step, run_id=run_id)

        return log

    def log_manifest(self, run_id: str, manifest: dict[str, Any]) -> None:
        """The manifest as a file, and its headline metrics and row counts as metrics without a step. A
        metric the stage already logged over its steps (train_vision's eval recalls at steps 20 and 40)
        keeps that history alone: its final value at step 0 would draw the chart out of order."""
        self.client.log_text(run_id, json.dumps(manifest, indent=2, sort_keys=True), "manifest.json")
        counts = manifest.get("counts", {})
        summary = {f"rows_{k[4:]}": v for k, v in counts.items() if k.startswith("num_")}
        summary["duration_s"] = manifest.get("duration_s", 0.0)
        tracked = set(self.client.get_run(run_id).data.metrics)
        headline = {k: v for k, v in manifest.get("metrics", {}).items() if k not in tracked}
        self.metrics_logger(run_id)({**headline, **summary})

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_file(self, run_id: str, local_path: str, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(run_id, local_path, artifact_dir)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
