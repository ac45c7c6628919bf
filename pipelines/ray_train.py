"""Ray Train inside a stage, shared by finetune_text and train_vision: the trainer (storage under the stage's
artifact, so a rerun resumes from its last checkpoint; failure recovery; two checkpoints kept), the typed
job every worker is handed, rank-0 MLflow logging and checkpoints of a state dict."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ops.stage import StageContext

JOB_KEY = "job"  # Ray Train hands a worker a dict; the stage's typed job travels under this one key
STATE_FILE = "state.pt"


@dataclasses.dataclass(frozen=True)
class RunLinks:
    """Where rank 0 writes: the stage's artifact directory and, when tracked, its MLflow run."""

    artifact_uri: str
    tracking_uri: str | None = None
    run_id: str | None = None


def run_links(ctx: StageContext) -> RunLinks:
    return RunLinks(ctx.artifact.uri, ctx.tracking_uri, ctx.mlflow_run_id)


def fit_in_artifact(
    train_fn: Callable[[dict[str, Any]], Any],
    job: Any,
    config,
    ctx: StageContext,
    datasets: dict[str, Any] | None = None,
    cpus_per_worker: float = 1.0,
):
    """(Ray Train result, wall seconds). `job` (a frozen dataclass) reaches each worker as job_of(its
    loop config); `config` gives num_workers, use_gpu, placement_strategy and max_failures. Each worker
    reserves cpus_per_worker CPUs (the training process and any decode processes it starts) and, with
    use_gpu, one GPU."""
    import ray.train
    from ray.train.torch import TorchTrainer

    began = time.perf_counter()
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={JOB_KEY: job},
        scaling_config=scaling_config(config, cpus_per_worker),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=ctx.artifact.uri,
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            # The newest checkpoint and one to fall back on; full fine-tuning checkpoints are large.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    return result, time.perf_counter() - began


def scaling_config(config, cpus_per_worker: float = 1.0):
    import ray.train

    return ray.train.ScalingConfig(
        num_workers=config.num_workers,
        use_gpu=config.use_gpu,
        placement_strategy=config.placement_strategy,
        resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})},
    )


def job_of(loop_config: dict[str, Any]) -> Any:
    return loop_config[JOB_KEY]


def worker_context() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of the Ray Train worker this runs on."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


class Rank0Metrics:
    """MLflow metrics from rank 0 into the stage's run; other ranks, and untracked runs, log nothing."""

    def __init__(self, links: RunLinks, rank: int):
        self.enabled = rank == 0 and bool(links.tracking_uri) and bool(links.run_id)
        self._run_id = links.run_id
        self._client = None
        if self.enabled:
            import mlflow

            self._client = mlflow.MlflowClient(links.tracking_uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._client is not None:
            for name, value in metrics.items():
                self._client.log_metric(self._run_id, name, value, step=step)


def restored_state(map_location) -> dict[str, Any] | None:
    """The state dict of the checkpoint Ray Train resumes this worker from, or None on a fresh start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location=map_location, weights_only=True)


def report_with_checkpoint(metrics: dict[str, float], state: Callable[[], dict[str, Any]], rank: int) -> None:
    """ray.train.report on every rank (it is a barrier); rank 0 also saves state() as the checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        if rank == 0:
            torch.save(state(), Path(folder) / STATE_FILE)
        checkpoint = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)
