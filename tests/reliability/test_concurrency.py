"""Two workflow invocations on one artifact root at the same time: each stage is written by one of them,
the other waits for it and reuses its artifact; both succeed and nothing is duplicated or torn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import DEMO_RECIPE, REPO_ROOT, SMALL_DEMO
from workflows.registry import CHAIN

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(400)]
STAGES = ("scenes", "download")


def _workflow(recipe, root, ray_address) -> subprocess.Popen:
    command = [sys.executable, str(REPO_ROOT / "workflows/full.py"), "--config", str(recipe)]
    command += ["--artifacts", str(root)]
    for assignment in SMALL_DEMO:
        command += ["--set", assignment]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_address  # both join the suite's cluster, as two `ray job submit`s would
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture
def scenes_and_download_recipe(tmp_path):
    """The demo's first and third stage: a generated stage and a sharded img2dataset stage."""
    data = yaml.safe_load(DEMO_RECIPE.read_text())
    stage_names = {spec.name for spec in CHAIN}
    kept = {k: v for k, v in data.items() if k not in stage_names or k in STAGES}
    path = tmp_path / "scenes-download.yaml"
    path.write_text(yaml.safe_dump(kept))
    return path


def test_two_invocations_at_once_write_each_stage_once(
    tmp_path, scenes_and_download_recipe, ray_cluster, got
):
    root = tmp_path / "shared-root"
    first, second = (_workflow(scenes_and_download_recipe, root, ray_cluster.address) for _ in range(2))
    outputs = [p.communicate(timeout=360)[0] for p in (first, second)]
    for process, output in zip((first, second), outputs):
        assert process.returncode == 0, output[-4000:]

    waited = []
    for stage in STAGES:
        runs = sum(o.count(f"[workflow] {stage}: running") for o in outputs)
        assert runs == 1, f"{stage} ran {runs} times:\n" + "\n----\n".join(o[-3000:] for o in outputs)
        waited += [stage for o in outputs if f"[workflow] {stage}: another run holds" in o]
        folders = [d for d in (root / stage).iterdir() if d.is_dir()]
        assert len(folders) == 1 and (folders[0] / "manifest.json").is_file(), folders
        assert not list(folders[0].rglob("*.tmp-*")), "a staging file was left behind"
    (download,) = [d for d in (root / "download").iterdir() if d.is_dir()]
    counts = json.loads((download / "manifest.json").read_text())["counts"]
    keys = []
    for tar_path in sorted((download / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            keys += [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert len(keys) == len(set(keys)) == counts["num_out"] == 64

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("llm2clip-demo").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in runs)
    waits = ", ".join(waited) or "nothing (it planned cache hits)"
    got(f"both succeeded, each stage written once; the other invocation waited for: {waits}")
