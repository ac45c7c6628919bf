from __future__ import annotations

import os

import pytest

from workflows.tracking import WorkflowTracker, default_tracking_uri


def test_default_store_is_sqlite_under_the_artifact_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(str(tmp_path / "root")) == f"sqlite:///{tmp_path}/root/mlflow.db"


def test_env_overrides_and_remote_roots_need_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri("memory://bucket/root") == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="set MLFLOW_TRACKING_URI"):
        default_tracking_uri("memory://bucket/root")


def test_tracker_restores_the_callers_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with WorkflowTracker(uri, "exp", str(tmp_path)) as tracker:
        assert os.environ["MLFLOW_TRACKING_URI"] == uri
        experiment = tracker.client.get_experiment(tracker.experiment_id)
        assert experiment.artifact_location == (tmp_path / "mlflow-artifacts").as_uri()
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_links_open_the_model_training_view():
    from workflows.tracking import experiment_link

    assert experiment_link("http://mlflow:5000/", "7") == (
        "  http://mlflow:5000/#/experiments/7?workflowType=machine_learning"
    )
    local = experiment_link("sqlite:////data/mlflow.db", "1")
    assert local.splitlines() == [
        "  mlflow ui --backend-store-uri sqlite:////data/mlflow.db",
        "  then http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning",
    ]
