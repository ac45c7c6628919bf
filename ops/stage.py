"""The stage contract: what a stage declares, what it is handed, and what it hands back."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from ops.artifact_dir import ArtifactDir
from ops.manifest import StageCounts, build_manifest

MetricsLogger = Callable[[dict[str, float], int | None], None]


def _discard_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    del metrics, step


def _discard_text(text: str, name: str) -> None:
    del text, name


def _discard_file(local_path: str) -> None:
    del local_path


@dataclasses.dataclass
class StageContext:
    """Handed to a stage's run: its own artifact directory, its inputs' directories and a metrics sink."""

    artifact: ArtifactDir
    inputs: dict[str, ArtifactDir]
    log_metrics: MetricsLogger = _discard_metrics
    log_text: Callable[[str, str], None] = _discard_text  # (text, artifact file name) into the stage's run
    log_file: Callable[[str], None] = _discard_file  # a local file (a plot) into the stage's run
    # Set by the workflow so that Ray Train's rank 0 can log into the stage's MLflow run.
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None


@dataclasses.dataclass(frozen=True)
class StageOutcome:
    """Counts that must reconcile (in = out + rejected) and the stage's headline metrics."""

    counts: StageCounts
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    # Extra manifest content, e.g. per-shard stats; JSON-serialisable.
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A stage as the workflow sees it. Bump code_version when the same config would now give other output."""

    name: str
    code_version: str
    config_cls: type
    # Every stage this one may read; each must come earlier in the chain.
    inputs: tuple[str, ...]
    run: Callable[[Any, StageContext], StageOutcome]
    description: str
    # A half-done directory is resumed, not cleared: the stage keeps per-shard completion markers, or Ray
    # Train checkpoints that a rerun starts from.
    resumable: bool = False
    # The inputs a given config reads, when fewer than all (download reads scenes only without a url_list).
    resolve_inputs: Callable[[Any], tuple[str, ...]] | None = None
    # Lines the dry-run prints about what this config will do (e.g. the starting temperature).
    plan_notes: Callable[[Any], list[str]] | None = None

    def inputs_for(self, config: Any) -> tuple[str, ...]:
        if self.resolve_inputs is None:
            return self.inputs
        chosen = self.resolve_inputs(config)
        undeclared = [name for name in chosen if name not in self.inputs]
        if undeclared:  # a stage author's error: the declared inputs are what docs and plans show
            raise ValueError(
                f"stage {self.name}: reads {undeclared}, not among its declared inputs {self.inputs}"
            )
        return chosen


def outcome_manifest(
    spec: StageSpec,
    key: str,
    config: Any,
    input_keys: dict[str, str],
    outcome: StageOutcome,
    started_at: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a finished stage run (written last: it makes the artifact complete)."""
    return build_manifest(
        stage=spec.name,
        key=key,
        code_version=spec.code_version,
        config=config,
        input_keys=input_keys,
        counts=outcome.counts,
        metrics=outcome.metrics,
        started_at=started_at,
        finished_at=time.time(),
        extra={**(extra or {}), "details": outcome.details},
    )
