"""Resolve a recipe into a plan: each stage's content key, artifact directory and what will happen to it."""

from __future__ import annotations

import dataclasses
from typing import Any

from ops.artifact_dir import ArtifactDir
from ops.hashing import content_key
from ops.stage import StageSpec

# What the runner does with a stage.
CACHED = "cached"  # complete artifact with this key exists: reuse it
RUN = "run"  # nothing complete there: run (a sharded stage resumes its finished shards)
RERUN = "rerun"  # asked for by --only/--from/--force: clear the directory, then run
SKIP = "skip"  # left out by --only


class PlanError(ValueError):
    """The selection flags cannot be satisfied (unknown stage, upstream not cached for --only)."""


@dataclasses.dataclass(frozen=True)
class PlannedStage:
    spec: StageSpec
    config: Any
    key: str
    input_keys: dict[str, str]
    artifact: ArtifactDir
    action: str
    reason: str


def stage_uri(artifact_root: str, stage: str, key: str) -> str:
    return f"{artifact_root.rstrip('/')}/{stage}/{key}"


def build_plan(
    stages: dict[str, Any],
    chain: tuple[StageSpec, ...],
    artifact_root: str,
    *,
    only: str | None = None,
    from_stage: str | None = None,
    force: tuple[str, ...] = (),
) -> list[PlannedStage]:
    """Keys flow down the chain, so a changed config changes its stage's key and every key below it."""
    selected = [spec for spec in chain if spec.name in stages]
    names = [spec.name for spec in selected]
    for flag, value in (("--only", only), ("--from", from_stage), *(("--force", f) for f in force)):
        if value is not None and value not in names:
            raise PlanError(f"{flag} {value}: not a stage of this recipe ({', '.join(names)})")
    if only is not None and from_stage is not None:
        raise PlanError("--only and --from cannot be combined")
    forced = set(force)
    if only is not None:
        forced.add(only)
    if from_stage is not None:
        forced.update(names[names.index(from_stage) :])

    keys: dict[str, str] = {}
    plan: list[PlannedStage] = []
    for spec in selected:
        config = stages[spec.name]
        input_keys = {dep: keys[dep] for dep in spec.inputs_for(config)}
        key = content_key(spec.name, spec.code_version, config, input_keys)
        keys[spec.name] = key
        artifact = ArtifactDir(stage_uri(artifact_root, spec.name, key))
        complete = artifact.is_complete()
        if only is not None and spec.name != only:
            upstream = names.index(spec.name) < names.index(only)
            if upstream and not complete:
                raise PlanError(
                    f"--only {only}: upstream stage {spec.name} has no complete artifact at {artifact.uri}; "
                    f"run the chain up to it first (without --only)"
                )
            action, reason = (
                (CACHED, "manifest found") if complete else (SKIP, f"not selected by --only {only}")
            )
        elif spec.name in forced:
            flag = "--only" if spec.name == only else ("--from" if from_stage else "--force")
            action, reason = RERUN, f"{flag}" + (" (replaces the cached artifact)" if complete else "")
        elif complete:
            action, reason = CACHED, "manifest found"
        elif artifact.exists():
            action = RUN
            reason = (
                "partial artifact: resuming (finished shards, last checkpoint)"
                if spec.resumable
                else "partial artifact: restart"
            )
        else:
            action, reason = RUN, "no artifact with this key"
        plan.append(PlannedStage(spec, config, key, input_keys, artifact, action, reason))
    return plan


def format_plan(plan: list[PlannedStage]) -> str:
    rows = [("stage", "action", "key", "why", "artifact")]
    rows += [(p.spec.name, p.action, p.key, p.reason, p.artifact.uri) for p in plan]
    return format_table(rows)


def format_table(rows: list[tuple]) -> str:
    """Plain aligned columns: readable in a terminal, a Ray job log and a markdown viewer alike."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text_rows) for i in range(len(text_rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in text_rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
