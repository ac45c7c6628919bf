"""The cluster's shared services as separate processes on loopback, the way a cluster reaches them:
an S3-compatible object store (moto's server mode) and an MLflow tracking server (`mlflow server`, SQLite
backend, artifact root on that object store). Each is stopped by ending exactly the process it started."""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from testbed.ray_cluster import VENV_BIN, free_port

# moto accepts any credentials; these are the standard variables every AWS client (boto3, s3fs,
# pyarrow's S3FileSystem) reads, so nothing in the pipeline is told about moto.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "llm2clip-test",
    "AWS_SECRET_ACCESS_KEY": "llm2clip-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class _Server:
    def __init__(self, name: str):
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _launch(self, command: list[str], env: dict[str, str] | None, ready_path: str, timeout_s: float):
        log = self.workdir / "server.log"
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}{ready_path}", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer in {timeout_s} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)

    def log_tail(self, chars: int = 4000) -> str:
        log = self.workdir / "server.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ObjectStoreServer(_Server):
    """`moto_server` on 127.0.0.1: S3's API in one process, kept in memory; one bucket created."""

    def __init__(self, bucket: str = "llm2clip"):
        super().__init__("moto")
        self.bucket = bucket

    @property
    def env(self) -> dict[str, str]:
        """What a client (driver, Ray worker, MLflow server) needs in its environment to reach the store."""
        return {"AWS_ENDPOINT_URL": self.url, **TEST_CREDENTIALS}

    def start(self) -> ObjectStoreServer:
        self._launch([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], None, "/", 60)
        import boto3

        boto3.client("s3", endpoint_url=self.url, **_boto_credentials()).create_bucket(Bucket=self.bucket)
        return self

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def filesystem(self):
        """An s3fs filesystem on this server (for a test to look at what the pipeline wrote)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.url,
            skip_instance_cache=True,
        )


class MlflowTrackingServer(_Server):
    """`mlflow server` on 127.0.0.1: runs in SQLite, artifacts proxied to `artifacts_uri` (object store)."""

    def __init__(self, artifacts_uri: str, store_env: dict[str, str]):
        super().__init__("mlflow")
        self.artifacts_uri = artifacts_uri
        self.store_env = store_env
        self.backend_uri = f"sqlite:///{self.workdir / 'mlflow.db'}"

    def start(self) -> MlflowTrackingServer:
        import os

        command = [
            str(VENV_BIN / "mlflow"),
            "server",
            *("--backend-store-uri", self.backend_uri),
            *("--artifacts-destination", self.artifacts_uri),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        # MLflow 3's server otherwise starts huey job consumers (three more processes with worker pools,
        # polling) for GenAI jobs that a training tracker never runs; on 2 cores they cost the suite time.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self._launch(command, {**env, **self.store_env}, "/health", 120)
        return self


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
