"""Execute a plan stage by stage inside the driver; Ray Data and Ray Train inside each stage distribute."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

from ops.artifact_dir import ArtifactDir
from ops.stage import StageContext, outcome_manifest
from workflows.plan import CACHED, RERUN, SKIP, PlannedStage, format_table
from workflows.tracking import WorkflowTracker


@dataclasses.dataclass
class StageReport:
    stage: str
    status: str  # cached | ran | resumed | skipped | failed
    duration_s: float
    counts: dict[str, int]
    uri: str
    key: str


def execute_plan(
    plan: list[PlannedStage], tracker: WorkflowTracker, reports: list[StageReport] | None = None
) -> list[StageReport]:
    """Run or reuse each stage in order; a stage's manifest is written only after it returned cleanly.

    Reports are appended to ``reports`` as stages finish, so a caller still has them when one fails.
    """
    reports = [] if reports is None else reports
    artifacts: dict[str, ArtifactDir] = {}
    for planned in plan:
        spec, artifact = planned.spec, planned.artifact
        artifacts[spec.name] = artifact
        if planned.action == SKIP:
            reports.append(StageReport(spec.name, "skipped", 0.0, {}, artifact.uri, planned.key))
            continue
        cache_hit = planned.action == CACHED
        held = contextlib.ExitStack()
        if not cache_hit:
            # One writer per artifact directory: a concurrent invocation of the same stage waits here,
            # then finds the manifest the first one wrote and reuses it (unless asked to rerun).
            held.enter_context(
                artifact.exclusive(on_wait=lambda lock, name=spec.name: _say_waiting(name, lock))
            )
            cache_hit = planned.action != RERUN and artifact.is_complete()
        tags = {
            "artifact_key": planned.key,
            "artifact_uri": artifact.uri,
            "code_version": spec.code_version,
            "input_keys": json.dumps(planned.input_keys, sort_keys=True),
            "cache_hit": str(cache_hit).lower(),
            "action": CACHED if cache_hit else planned.action,
        }
        with held, tracker.stage_run(spec.name, planned.config, tags) as run_id:
            if cache_hit:
                manifest = artifact.read_manifest()
                tracker.log_manifest(run_id, manifest)
                reports.append(
                    StageReport(spec.name, "cached", 0.0, manifest["counts"], artifact.uri, planned.key)
                )
                print(f"[workflow] {spec.name}: cached ({artifact.uri})", flush=True)
                continue
            # --only/--from/--force replace a complete artifact; an incomplete one (a killed run with the
            # same key, so the same config and inputs) is resumed like any other.
            replacing = planned.action == RERUN and artifact.is_complete()
            resumed = bool(spec.resumable and artifact.exists() and not replacing)
            if replacing or (artifact.exists() and not spec.resumable):
                artifact.clear()
            print(
                f"[workflow] {spec.name}: {'resuming' if resumed else 'running'} -> {artifact.uri}",
                flush=True,
            )
            ctx = StageContext(
                artifact=artifact,
                inputs={dep: artifacts[dep] for dep in planned.input_keys},
                log_metrics=tracker.metrics_logger(run_id),
                log_text=lambda text, name, run_id=run_id: tracker.log_text(run_id, text, name),
                log_file=lambda path, run_id=run_id: tracker.log_file(run_id, path),
                tracking_uri=tracker.tracking_uri,
                mlflow_run_id=run_id,
            )
            started = time.time()
            try:
                outcome = spec.run(planned.config, ctx)
            except BaseException:
                reports.append(
                    StageReport(spec.name, "failed", time.time() - started, {}, artifact.uri, planned.key)
                )
                raise
            manifest = outcome_manifest(
                spec,
                planned.key,
                planned.config,
                planned.input_keys,
                outcome,
                started,
                extra={"input_uris": {dep: artifacts[dep].uri for dep in planned.input_keys}},
            )
            artifact.write_manifest(manifest)  # last: from here on the artifact is a cache hit
            tracker.log_manifest(run_id, manifest)
            status = "resumed" if resumed else "ran"
            reports.append(
                StageReport(
                    spec.name, status, manifest["duration_s"], manifest["counts"], artifact.uri, planned.key
                )
            )
    return reports


def _say_waiting(stage: str, lock_path: str) -> None:
    print(f"[workflow] {stage}: another run holds {lock_path}; waiting for it to finish", flush=True)


def format_summary(reports: list[StageReport]) -> str:
    rows = [("stage", "status", "duration_s", "rows_in", "rows_out", "rejected", "artifact")]
    for r in reports:
        rows.append(
            (
                r.stage,
                r.status,
                f"{r.duration_s:.1f}",
                r.counts.get("num_in", "-"),
                r.counts.get("num_out", "-"),
                r.counts.get("num_rejected", "-"),
                r.uri,
            )
        )
    return format_table(rows)
