"""Killed downloads: the workflow's driver, a Ray download task and a multiprocessing pool worker, each
SIGKILLed mid-download; every row ends up once, nothing is lost (real img2dataset, loopback server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from ops.artifact_dir import ArtifactDir
from ops.loopback_http import LoopbackFileServer
from ops.stage import StageContext
from pipelines.download.stage import run_download
from testbed.waiting import processes_matching, wait_until
from tests.conftest import REPO_ROOT
from tests.pipelines.download.test_download import _config, _samples, _url_table, _write_corpus


def _recipe(path: Path, url_list: Path) -> Path:
    path.write_text(
        "name: kill-test\nray: {num_cpus: 2}\ndownload:\n"
        f"  url_list: {url_list}\n  image_size_px: 32\n  samples_per_shard: 4\n"
        "  processes_count: 1\n  thread_count: 1\n  timeout_s: 10\n"
    )
    return path


def _workflow(recipe: Path, root: Path, ray_address: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_ADDRESS"] = ray_address  # the driver joins the suite's cluster, as a submitted job would
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "workflows/full.py"),
            "--config",
            str(recipe),
            "--artifacts",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # so the kill takes img2dataset's worker processes too
    )


@pytest.mark.slow
@pytest.mark.reliability
def test_killed_download_resumes_without_duplicates_or_gaps(tmp_path, ray_cluster, record_property):
    corpus_dir = tmp_path / "corpus"
    paths = _write_corpus(corpus_dir, 24)[:24]
    with LoopbackFileServer(str(corpus_dir), delay_s=0.15) as server:
        recipe = _recipe(tmp_path / "recipe.yaml", _url_table(server, paths, tmp_path / "urls.parquet"))
        root = tmp_path / "artifacts"
        first = _workflow(recipe, root, ray_cluster.address)

        def a_shard_finished() -> bool:
            assert first.poll() is None, first.communicate()[0][-3000:]
            return bool(list(root.glob("download/*/shards/*_stats.json")))

        wait_until(a_shard_finished, 240, "a shard to finish", poll_s=0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        (stage_dir,) = [p for p in root.glob("download/*") if p.is_dir()]
        done_before = _finished_shards(stage_dir / "shards")
        assert not (stage_dir / "manifest.json").exists()
        assert len(done_before) < 6

        second = _workflow(recipe, root, ray_cluster.address)
        output = second.communicate(timeout=300)[0]
        assert second.returncode == 0, output[-3000:]
        assert f"resuming: {len(done_before)} of 6 shards already complete" in output

        manifest = json.loads((stage_dir / "manifest.json").read_text())
        assert manifest["counts"]["num_in"] == manifest["counts"]["num_out"] == 24
        samples = _samples(stage_dir / "shards")
        urls = sorted(json.loads(s["json"])["url"] for s in samples.values())
        assert urls == sorted(server.url_for(p) for p in paths)  # every row once: no gap, no duplicate
        for shard in done_before:  # finished shards were not fetched again
            shard_rows = (
                pq.read_table(stage_dir / "shards" / f"{shard:05d}.parquet").column("url").to_pylist()
            )
            assert all(server.requests[url.split("/", 3)[-1]] == 1 for url in shard_rows)
        record_property(
            "got",
            f"driver killed after {len(done_before)} of 6 shards; resumed, 24 rows once each, none refetched",
        )


def _finished_shards(shards: Path) -> list[int]:
    """Shards whose stats file img2dataset finished writing (the kill may land in the middle of one,
    which the resumed run redoes)."""
    finished = []
    for path in shards.glob("*_stats.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            continue
        finished.append(int(path.name.split("_")[0]))
    return sorted(finished)


def _download_while(kill, corpus_dir: Path, paths: list[str], tmp_path: Path, **overrides):
    """The download stage on a slow loopback server (shards of 4, one thread) while `kill` runs beside
    it in a thread; returns (outcome, server)."""
    with LoopbackFileServer(str(corpus_dir), delay_s=0.2) as server:
        url_list = _url_table(server, paths, tmp_path / "urls.parquet")
        killer = threading.Thread(target=kill, args=(server,), daemon=True)
        killer.start()
        config = _config(url_list, samples_per_shard=4, thread_count=1, **overrides)
        outcome = run_download(config, StageContext(ArtifactDir(str(tmp_path / "dl")), {}))
        killer.join(timeout=10)
    return outcome, server


def _assert_every_row_once(outcome, tmp_path: Path, server, paths: list[str], killed: list[int]) -> None:
    assert len(killed) == 1
    assert (outcome.counts.num_in, outcome.counts.num_out, outcome.counts.num_rejected) == (12, 12, 0)
    urls = sorted(json.loads(s["json"])["url"] for s in _samples(tmp_path / "dl" / "shards").values())
    assert urls == sorted(server.url_for(p) for p in paths)  # each row once: no gap, no duplicate


@pytest.mark.reliability
def test_ray_distributor_survives_a_killed_worker(tmp_path, ray_session, record_property):
    """SIGKILL the Ray worker running one of img2dataset's shard tasks: Ray retries the task and the
    shard is written whole, once."""
    corpus_dir = tmp_path / "corpus"
    paths = _write_corpus(corpus_dir, 12)[:12]
    killed: list[int] = []

    def kill_a_download_task(server) -> None:
        # Mid-shard: a shard task runs and the slow server has answered some of its requests.
        (task, *_) = wait_until(
            lambda: sum(server.requests.values()) >= 1 and processes_matching("ray_download"),
            120,
            "a ray_download task with a response in",
            poll_s=0.02,
        )
        task.kill()
        killed.append(task.pid)

    outcome, server = _download_while(kill_a_download_task, corpus_dir, paths, tmp_path, distributor="ray")
    _assert_every_row_once(outcome, tmp_path, server, paths, killed)
    refetched = sum(n - 1 for n in server.requests.values())
    record_property(
        "got",
        f"a Ray worker killed mid-shard; Ray retried the task: 12 of 12 once ({refetched} urls refetched)",
    )


@pytest.mark.reliability
def test_multiprocessing_distributor_survives_a_killed_worker_process(tmp_path, record_property):
    """img2dataset's own Pool waits forever for the shard of a dead worker; the stage's distributor
    retries that shard in a fresh pool."""
    corpus_dir = tmp_path / "corpus"
    paths = _write_corpus(corpus_dir, 12)[:12]
    killed: list[int] = []

    def kill_a_pool_worker(server) -> None:
        me = psutil.Process()

        def pool_workers_with_responses_in() -> list[psutil.Process]:
            # The pool's workers are forked by multiprocessing's forkserver, a child of this process
            # (img2dataset's logger process is a spawned child of its own).
            forkservers = [c for c in me.children() if "forkserver" in " ".join(c.cmdline())]
            workers = [worker for forkserver in forkservers for worker in forkserver.children()]
            return workers if len(workers) == 2 and sum(server.requests.values()) >= 2 else []

        # Mid-shard: both pool workers run and the slow server has answered some of their requests.
        workers = wait_until(pool_workers_with_responses_in, 120, "two pool workers with responses in", 0.02)
        workers[-1].kill()
        killed.append(workers[-1].pid)

    outcome, server = _download_while(kill_a_pool_worker, corpus_dir, paths, tmp_path, processes_count=2)
    _assert_every_row_once(outcome, tmp_path, server, paths, killed)
    record_property(
        "got", "a download worker process killed mid-shard; its shard retried in a new pool: 12 of 12 once"
    )
