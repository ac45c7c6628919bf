"""A real Ray cluster on loopback for the tests: `ray start --head`, stopped by killing exactly the
processes it started, so a developer's own Ray on the machine survives."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from testbed.waiting import is_alive

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What a job must bring itself (`ray job submit --runtime-env-json`), as on a cluster whose nodes were
# started without them: the nodes never see the test process's object-store credentials or MLflow server.
JOB_SETTINGS = (
    "RAY_ADDRESS",
    "MLFLOW_TRACKING_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


def cluster_env() -> dict[str, str]:
    """The environment the cluster's processes (and so a job's `python`) see: this venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in JOB_SETTINGS}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@functools.cache
def use_a_test_token() -> Path:
    """Ray's token authentication with a token of the test process's own, for it and its children (nodes,
    `ray job submit`, drivers): Ray turns token auth on by default once ~/.ray/auth_token exists, and a
    test must neither depend on nor write a developer's token. One token for every cluster of the run."""
    token_path = Path(tempfile.mkdtemp(prefix="ray-token-")) / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return token_path


class LocalRayCluster:
    """Head node with the dashboard (the job server `ray job submit` talks to) on 127.0.0.1, and any
    number of worker nodes joined to it (`ray start --address`), each a raylet of its own on this machine."""

    def __init__(self, num_cpus: int):
        self.num_cpus = num_cpus
        # Short: Ray's unix sockets live under the temp dir and their paths are limited to ~107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        use_a_test_token()
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self._nodes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start_node(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(Path(self.temp_dir) / log_name, "wb")  # noqa: SIM115 - kept open for the node's life
        # --block keeps the node's processes children of this one, in a session of their own, so stop()
        # can end exactly them (`ray stop` would end every Ray on the machine).
        node = subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
            env=cluster_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._nodes.append(node)
        return node

    def start(self, timeout_s: float = 120.0) -> LocalRayCluster:
        self._start_node(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.gcs_port}",
                f"--num-cpus={self.num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.temp_dir}",
            ],
            "head.log",
        )
        self._wait_for(f"{self.dashboard_url}/api/version", timeout_s, "head")
        # The dashboard answers before the GCS lists the head's raylet: ready means the node is ALIVE.
        self._wait_for_nodes(lambda nodes: any(n["state"] == "ALIVE" for n in nodes), timeout_s, "head")
        return self

    def add_worker_node(self, num_cpus: int, resources: dict[str, float], timeout_s: float = 120.0) -> str:
        """`ray start --address=<head>` with its own CPUs and custom resources (names no other node has);
        returns its node id once the head lists it alive. Its ports and its temp dir are its own, as on a
        machine of its own: with a shared one, its runtime-env agent deletes the job packages (the driver's
        working directory) that the head's agent still uses."""
        node_temp_dir = tempfile.mkdtemp(prefix="rw", dir=self.temp_dir)
        self._start_node(
            [
                f"--address={self.address}",
                f"--temp-dir={node_temp_dir}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
                f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}",
            ],
            f"worker-{len(self._nodes)}.log",
        )

        def joined(nodes: list[dict]) -> list[dict]:
            return [
                n
                for n in nodes
                if n["state"] == "ALIVE" and all(r in n["resources_total"] for r in resources)
            ]

        added = self._wait_for_nodes(joined, timeout_s, "worker")
        return added[0]["node_id"]

    def _wait_for_nodes(self, condition, timeout_s: float, what: str):
        """condition(nodes)'s first truthy value, polled from the state API while every node process
        lives; the cluster is stopped and its logs raised when a node dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and all(node.poll() is None for node in self._nodes):
            found = condition(self.nodes())
            if found:
                return found
            time.sleep(0.2)
        logs = self.log_tail()
        self.stop()
        raise RuntimeError(f"Ray {what} node did not come up alive:\n{logs}")

    def nodes(self) -> list[dict]:
        """The cluster's nodes from Ray's state API (the dashboard's), as dicts with node_id, state and
        resources_total; this process need not join the cluster."""
        from ray.util.state import list_nodes

        try:
            return [
                n.__dict__
                for n in list_nodes(address=self.dashboard_url, detail=True, raise_on_missing_output=False)
            ]
        except Exception:  # the head's API may still be starting
            return []

    def _wait_for(self, url: str, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(node.poll() is not None for node in self._nodes):
                break
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers (401 where Ray's token authentication is on): the server is up
            except OSError:
                time.sleep(0.5)
        logs = self.log_tail()
        self.stop()
        raise RuntimeError(f"Ray {what} node did not come up:\n{logs}")

    def log_tail(self, chars: int = 4000) -> str:
        logs = sorted(Path(self.temp_dir).glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)

    def submit(
        self,
        entrypoint: list[str],
        working_dir: Path,
        submission_id: str,
        timeout_s: float,
        runtime_env: dict | None = None,
    ):
        """`ray job submit` exactly as a user types it; returns the finished CompletedProcess."""
        command = [
            str(VENV_BIN / "ray"),
            "job",
            "submit",
            f"--address={self.dashboard_url}",
            f"--submission-id={submission_id}",
            f"--working-dir={working_dir}",
            *([f"--runtime-env-json={json.dumps(runtime_env)}"] if runtime_env else []),
            "--",
            *entrypoint,
        ]
        return subprocess.run(
            command, env=cluster_env(), capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def stop(self) -> None:
        import psutil

        # Every process the nodes started, found before they go: some (the dashboard's modules) run in
        # process groups of their own and would outlive a signal to the node's group.
        started: list[psutil.Process] = []
        for node in self._nodes:
            with contextlib.suppress(psutil.NoSuchProcess):
                started += psutil.Process(node.pid).children(recursive=True)
        # SIGTERM to `ray start` alone: it drains the node and ends its processes while the GCS still
        # answers (a SIGTERM to the whole group kills the GCS first, and the drain then waits 30 s).
        for node in reversed(self._nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in reversed(self._nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=4)  # the drain usually ends in ~1 s; what is left gets SIGKILL below
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
        for process in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        # Not our children, so wait_procs cannot reap them: a zombie left for its parent counts as gone.
        deadline = time.monotonic() + 10
        while any(is_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
