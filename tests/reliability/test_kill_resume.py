"""SIGKILL the workflow's driver in the middle of a stage, then run the same command again: the stage
resumes (Ray Train from its last registered checkpoint) or reruns, and ends as an uninterrupted run does.
The drivers join the suite's Ray cluster, as `ray job submit` drivers do; when one dies, Ray ends its job's
workers. train_vision's resumed run also loses a Ray Train worker, which FailureConfig recovers.

Killed drivers of the other stages: download (tests/pipelines/download/test_download_kills.py), recaption
(test_recaption.py) and embed (test_embed.py) through their commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from testbed.waiting import describe_processes, processes_matching, wait_until
from tests.conftest import FINETUNE_SETTINGS, REPO_ROOT, SMALL_DEMO, copy_of_demo, new_stage_dir
from tests.ray_train_faults import kill_a_worker_when, registered_checkpoint_steps
from tests.training_records import assert_same_tensors, logged_steps, sqlite_store

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(600)]


class Workflow:
    """workflows/full.py on the demo recipe in a subprocess of its own, its output collected as it comes."""

    def __init__(self, root: Path, ray_address: str, *arguments: str):
        command = [sys.executable, str(REPO_ROOT / "workflows/full.py"), "--config", "configs/demo.yaml"]
        command += ["--artifacts", str(root), *arguments]
        for assignment in SMALL_DEMO:
            command += ["--set", assignment]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["RAY_ADDRESS"] = ray_address
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill_when(self, ready, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready(self):
            assert self.process.poll() is None, f"finished before the kill:\n{self.output[-4000:]}"
            assert time.monotonic() < deadline, f"not ready in time:\n{self.output[-4000:]}"
            time.sleep(0.01)
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self, timeout_s: float = 500) -> str:
        self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        assert self.process.returncode == 0, self.output[-6000:]
        return self.output


def _complete(root: Path, stage: str) -> Path:
    (folder,) = [d for d in (root / stage).iterdir() if (d / "manifest.json").exists()]
    return folder


TRAIN_PROCESSES = ("RayTrainWorker", "TrainController")


def _train_processes() -> set[tuple[int, float]]:
    """(pid, start time) of the session's Ray Train processes: a pid alone may be reused."""
    return {(p.pid, p.create_time()) for p in processes_matching(*TRAIN_PROCESSES)}


def _wait_for_train_workers_to_go(already_running: set[tuple[int, float]], timeout_s: float = 180) -> None:
    """Ray ends a dead driver's workers, usually within seconds; the next run must not race them. Only the
    killed driver's: a Ray Train controller of a run in the test process itself lives as long as Ray's
    SIGINT handler holds its handle (until that process's next fit), and is not this test's business.
    The bound is generous: the GCS may first ask an orphaned actor to exit gracefully and force it only
    after `actor_graceful_shutdown_timeout_ms` (30 s), once for the controller and again for its workers,
    and a CI run late in the suite once took more than 60 s here."""
    try:
        wait_until(
            lambda: not (_train_processes() - already_running),
            timeout_s,
            "the killed driver's Ray Train workers to end",
            poll_s=0.2,
        )
    except AssertionError as timed_out:
        still_running = describe_processes(_train_processes() - already_running)
        raise AssertionError(f"{timed_out}; still running:\n{still_running}") from None


@pytest.fixture
def demo_copy(demo_root, tmp_path) -> Path:
    return copy_of_demo(demo_root, tmp_path / "root")


def _unfinished_stage_dir(root: Path, stage: str) -> Path | None:
    """The stage's one folder without a manifest: the run under way (every folder the demo copy came with
    is complete; a forced rerun under the demo's key clears its folder first)."""
    folders = [d for d in (root / stage).iterdir() if d.is_dir() and not (d / "manifest.json").exists()]
    return folders[0] if folders else None


def _registered_steps_of_new_run(root: Path, stage: str) -> list[int]:
    """Checkpoint steps of the stage's run under way, once its folder exists."""
    folder = _unfinished_stage_dir(root, stage)
    return registered_checkpoint_steps(folder / "train") if folder else []


def _kill_the_driver_then_lose_a_worker(
    root: Path, ray_address: str, settings, stage: str, worker_after_step: int
) -> tuple[Path, list[int], str, list[int]]:
    """Run `settings` until its stage registers a checkpoint and SIGKILL the driver; run it again while a
    Ray Train worker is SIGKILLed once a checkpoint at or past `worker_after_step` is registered.
    Returns (stage dir, checkpoint steps at the driver's kill, the rerun's output, killed worker pids)."""
    already_running = _train_processes()
    first = Workflow(root, ray_address, *settings)
    first.kill_when(lambda _: _registered_steps_of_new_run(root, stage))
    stage_dir = _unfinished_stage_dir(root, stage)
    assert stage_dir is not None
    steps_at_kill = registered_checkpoint_steps(stage_dir / "train")
    _wait_for_train_workers_to_go(already_running)

    killed: list[int] = []
    ready = lambda steps: any(s >= worker_after_step for s in steps)  # noqa: E731
    killer = kill_a_worker_when(stage_dir / "train", ready, killed)
    output = Workflow(root, ray_address, *settings).finish()
    killer.join(timeout=30)
    assert len(killed) == 1
    assert f"[workflow] {stage}: resuming" in output and f"executed: {stage}\n" in output
    return stage_dir, steps_at_kill, output, killed


def _assert_resumed_equals_uninterrupted(
    resumed_root: Path, resumed: Path, reference_uri: str, reference: Path, stage: str, weights: str
) -> list[int]:
    """Every step the killed and resumed runs logged has the loss the uninterrupted run logged at that
    step, and the saved weights are bit-identical; returns the steps compared."""
    logged = logged_steps(sqlite_store(resumed_root), stage, "train_loss")
    expected = logged_steps(reference_uri, stage, "train_loss")
    assert logged, "the runs logged no loss"
    for step, values in sorted(logged.items()):
        assert set(values) == set(expected[step]), (step, values, expected[step])
    assert_same_tensors(resumed / weights, reference / weights)
    return sorted(logged)


def test_finetune_text_driver_killed_then_a_worker_killed_resumes_twice(
    demo_root, demo_copy, ray_cluster, finetune_reference, got
):
    """`--only finetune_text` with MNTP, (short, long) pairs and hard negatives on, 12 steps with a
    checkpoint every 4 (a key of its own): the driver dies after step 4; the rerun skips the finished
    MNTP phase, resumes from step 4, loses a worker after step 8 and Ray Train restarts the group from it.
    Step for step, its losses are those of an uninterrupted run, and so is its encoder, bit for bit."""
    settings = ["--only", "finetune_text"]
    for assignment in FINETUNE_SETTINGS:
        settings += ["--set", assignment]
    demo_dir = _complete(demo_root, "finetune_text")
    stage_dir, steps_at_kill, _, _ = _kill_the_driver_then_lose_a_worker(
        demo_copy, ray_cluster.address, settings, "finetune_text", worker_after_step=8
    )
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    uninterrupted = json.loads((demo_dir / "manifest.json").read_text())
    assert manifest["counts"] == uninterrupted["counts"]
    assert steps_at_kill and max(steps_at_kill) < 12
    assert manifest["metrics"]["resumed_from_step"] >= 8
    assert max(registered_checkpoint_steps(stage_dir / "train")) == 12
    assert (stage_dir / "mntp_model" / "_DONE").is_file()
    pairs = pq.read_table(stage_dir / "pairs" / "train.parquet")
    assert set(pairs["kind"].to_pylist()) == {"original_dense", "short_long"}
    assert pairs.filter(pc.equal(pairs["kind"], "original_dense")).num_rows == 48
    assert "hard_negative_2" in pairs.column_names
    assert (stage_dir / "encoder" / "encoder_config.json").is_file()
    reference = new_stage_dir(finetune_reference, demo_root, "finetune_text")
    assert reference.name == stage_dir.name
    compared = _assert_resumed_equals_uninterrupted(
        demo_copy, stage_dir, sqlite_store(finetune_reference), reference, "finetune_text", "encoder"
    )
    # Every step: rank 0 flushes its losses before each checkpoint, and a resumed run redoes the rest.
    assert compared == list(range(1, 13))
    assert_same_tensors(stage_dir / "mntp_model", reference / "mntp_model")
    resumed = int(manifest["metrics"]["resumed_from_step"])
    got(
        f"driver killed with checkpoints {steps_at_kill}, a worker after step 8; resumed from {resumed} to "
        "12; the loss at each of steps 1-12 and the encoder bit for bit equal an uninterrupted run's"
    )


def test_train_vision_driver_killed_then_a_worker_killed_resumes_twice(
    demo_root, demo_copy, ray_cluster, demo_tracking_uri, got
):
    """`--only train_vision` with a checkpoint every 10 steps (not in the key: the run takes the demo's
    key, whose finished artifact is removed from the copy first): the driver dies after step 10; the rerun
    resumes, loses a worker after step 20 and Ray Train restarts the group from it. Its losses (logged
    every 5 steps) and its exported model equal the uninterrupted demo run's."""
    settings = ("--only", "train_vision", "--set", "train_vision.checkpoint_every_steps=10")
    demo_dir = _complete(demo_root, "train_vision")
    # The copy's finished run under this key goes first: its registered checkpoints (step 40) would
    # trigger the kills before the new run registers any.
    shutil.rmtree(demo_copy / "train_vision" / demo_dir.name)
    stage_dir, _, _, _ = _kill_the_driver_then_lose_a_worker(
        demo_copy, ray_cluster.address, settings, "train_vision", worker_after_step=20
    )
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    uninterrupted = json.loads((demo_dir / "manifest.json").read_text())
    assert manifest["counts"] == uninterrupted["counts"]
    assert manifest["metrics"]["resumed_from_step"] >= 20
    assert max(registered_checkpoint_steps(stage_dir / "train")) == 40
    assert (stage_dir / "export" / "model.safetensors").is_file()
    compared = _assert_resumed_equals_uninterrupted(
        demo_copy, stage_dir, demo_tracking_uri, demo_dir, "train_vision", "export"
    )
    assert compared == list(range(5, 41, 5))
    resumed = int(manifest["metrics"]["resumed_from_step"])
    got(
        f"driver killed after step 10, a Ray Train worker after step 20; resumed from step {resumed} to 40; "
        "losses at steps 5-40 and the export bit for bit equal the uninterrupted run's"
    )


def test_evaluate_driver_killed_mid_stage_reruns_to_the_same_numbers(demo_root, demo_copy, ray_cluster, got):
    demo_dir = _complete(demo_root, "evaluate")
    shutil.rmtree(demo_copy / "evaluate" / demo_dir.name)
    first = Workflow(demo_copy, ray_cluster.address)
    first.kill_when(lambda w: "[workflow] evaluate: running" in w.output)
    assert not (demo_copy / "evaluate" / demo_dir.name / "manifest.json").exists()

    output = Workflow(demo_copy, ray_cluster.address).finish()
    assert "executed: evaluate\n" in output
    again = _complete(demo_copy, "evaluate")
    assert json.loads((again / "metrics.json").read_text()) == json.loads(
        (demo_dir / "metrics.json").read_text()
    )
    got("killed mid-stage (no manifest); the rerun (not sharded: cleared, run again) gave identical metrics")
