"""The chain as users run it on a cluster: `ray start --head` on loopback, then `ray job submit
--working-dir . -- python workflows/full.py --config configs/demo.yaml` (the suite's demo_job fixture)."""

from __future__ import annotations

import socket
import subprocess

import psutil
import pytest

from testbed.demo_run import DEMO_STAGES
from testbed.ray_cluster import VENV_BIN, LocalRayCluster, cluster_env
from testbed.waiting import is_alive, wait_until
from tests.conftest import DEMO_SUBMISSION_ID
from tests.workflows.test_full_workflow import _executed


def test_the_submitted_demo_job_ran_every_stage_on_the_cluster(demo_job, ray_cluster):
    output = demo_job.output
    assert _executed(output) == list(DEMO_STAGES)
    # The job's driver joined the cluster it was submitted to rather than starting a Ray of its own.
    joined = [line for line in output.splitlines() if line.startswith("joined Ray cluster at ")]
    assert joined and joined[0].endswith(f":{ray_cluster.gcs_port}"), joined
    status = subprocess.run(
        [
            str(VENV_BIN / "ray"),
            "job",
            "status",
            f"--address={ray_cluster.dashboard_url}",
            DEMO_SUBMISSION_ID,
        ],
        env=cluster_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"Job '{DEMO_SUBMISSION_ID}' succeeded" in status.stdout + status.stderr
    from ray.job_submission import JobSubmissionClient

    job = JobSubmissionClient(ray_cluster.dashboard_url).get_job_info(DEMO_SUBMISSION_ID)
    # --working-dir . was packaged and shipped through the cluster, not read from the checkout.
    assert job.runtime_env["working_dir"].startswith("gcs://")
    assert job.entrypoint.startswith("python workflows/full.py --config configs/demo.yaml")
    assert job.runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == demo_job.tracking_uri


def test_stopping_a_cluster_ends_every_process_it_started():
    cluster = LocalRayCluster(num_cpus=1).start()  # returns once the head node is ALIVE in the GCS
    try:
        head = psutil.Process(cluster._nodes[0].pid)

        def head_and_its_servers() -> list[psutil.Process]:
            processes = [head, *head.children(recursive=True)]
            names = " ".join(p.name() for p in processes)
            return processes if "gcs_server" in names and "raylet" in names else []

        # The raylet may be spawned a moment after the GCS lists the node: wait for it, with a bound.
        started = wait_until(head_and_its_servers, 60, "the head's gcs_server and raylet processes")
    finally:
        cluster.stop()
    alive = [p for p in started if is_alive(p)]
    assert alive == [], [p.name() for p in alive]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.dashboard_port), timeout=2).close()
