"""One way to run a TorchTrainer inside a stage: storage under the stage's artifact (so a rerun resumes
from its last checkpoint), failure recovery, two checkpoints kept, and what rank 0 needs for MLflow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ops.stage import StageContext


def fit_in_artifact(
    train_fn: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    config,
    ctx: StageContext,
    datasets: dict[str, Any] | None = None,
):
    """(Ray Train result, wall seconds). `config` gives num_workers, use_gpu, placement_strategy and
    max_failures; the loop config gains artifact_uri, tracking_uri and run_id."""
    import ray.train
    from ray.train.torch import TorchTrainer

    began = time.perf_counter()
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={
            **loop_config,
            "artifact_uri": ctx.artifact.uri,
            "tracking_uri": ctx.tracking_uri,
            "run_id": ctx.mlflow_run_id,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            placement_strategy=config.placement_strategy,
        ),
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
