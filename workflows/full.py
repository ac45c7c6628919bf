"""Run the LLM2CLIP chain from a recipe: the Ray job entrypoint.

ray job submit --working-dir . -- python workflows/full.py --config configs/demo.yaml
python workflows/full.py --config configs/demo.yaml --set scenes.num_train=64 --dry-run
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # `python workflows/full.py` puts workflows/ on sys.path, not the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from ops.config_schema import ConfigError
from ops.errors import BadInputError
from ops.hashing import to_plain
from workflows.plan import PlanError, build_plan, format_plan, format_table
from workflows.recipe import Recipe, ResourcesConfig, load_recipe
from workflows.registry import CHAIN


def build_parser(prog: str = "workflows/full.py") -> argparse.ArgumentParser:
    stage_names = ", ".join(spec.name for spec in CHAIN)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the LLM2CLIP stage chain of a recipe, reusing cached stage artifacts.",
        epilog=f"Stages, in order: {stage_names}. Tracking: MLflow (MLFLOW_TRACKING_URI, else "
        "sqlite:///<artifacts>/mlflow.db). Under `ray job submit` the job joins that cluster; run "
        "plainly it starts a local Ray.",
    )
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. configs/demo.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable: --set scenes.num_train=64 (value parsed as YAML)",
    )
    parser.add_argument("--artifacts", default="./artifacts", help="artifact root: a path or fsspec URI")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--only", metavar="STAGE", help="rerun this stage alone; upstream must be cached")
    selection.add_argument(
        "--from", dest="from_stage", metavar="STAGE", help="rerun this stage and all after it"
    )
    parser.add_argument(
        "--force", metavar="STAGE", action="append", default=[], help="rerun this stage even if cached"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; touch nothing")
    return parser


def recipe_text(recipe: Recipe) -> str:
    resolved = {
        "name": recipe.name,
        "experiment": recipe.experiment,
        "description": recipe.description,
        "ray": to_plain(recipe.ray),
        **{name: to_plain(config) for name, config in recipe.stages.items()},
    }
    return yaml.safe_dump(resolved, sort_keys=False)


def format_resources(resources: ResourcesConfig) -> str:
    """The recipe's stated hardware and per-stage estimates, with the GPU-hours they add up to."""
    rows = [("stage", "gpus", "hours", "gpu_hours", "basis")]
    for e in resources.estimates:
        rows.append((e.stage, e.gpus, f"{e.hours:g}", f"{e.gpus * e.hours:g}", e.basis))
    total_hours = sum(e.hours for e in resources.estimates)
    total_gpu_hours = sum(e.gpus * e.hours for e in resources.estimates)
    rows.append(
        ("total", resources.gpus, f"{total_hours:g}", f"{total_gpu_hours:g}", "stages run one after another")
    )
    head = f"expects: {resources.gpus} x {resources.gpu_type or 'GPU'}" + (
        f"; {resources.cpu_nodes}" if resources.cpu_nodes else ""
    )
    return head + "\n" + format_table(rows)


def main(argv: list[str] | None = None, prog: str = "workflows/full.py") -> int:
    args = build_parser(prog).parse_args(argv)
    artifact_root = args.artifacts if "://" in args.artifacts else str(Path(args.artifacts).resolve())
    try:
        recipe = load_recipe(args.config, CHAIN, tuple(args.overrides))
        plan = build_plan(
            recipe.stages,
            CHAIN,
            artifact_root,
            only=args.only,
            from_stage=args.from_stage,
            force=tuple(args.force),
        )
    except (ConfigError, PlanError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print(f"recipe {recipe.name} ({recipe.source}) -> {artifact_root}")
    print(format_plan(plan), flush=True)
    to_run = [p.spec.name for p in plan if p.action in ("run", "rerun")]
    print(
        "nothing to run: every stage is cached" if not to_run else f"will run: {', '.join(to_run)}",
        flush=True,
    )
    if args.dry_run:
        for planned in plan:
            if planned.action in ("run", "rerun") and planned.spec.plan_notes is not None:
                for line in planned.spec.plan_notes(planned.config):
                    print(f"{planned.spec.name}: {line}", flush=True)
        if recipe.resources is not None:
            print(format_resources(recipe.resources), flush=True)
        return 0

    # MLflow loads and Ray starts only from here on: --help, --dry-run and a config error touch no cluster
    # and no tracking server (the registry's stage modules already import torch and Ray's client).
    from workflows.ray_runtime import ensure_ray, ray_job_submission_id
    from workflows.runner import execute_plan, format_summary
    from workflows.tracking import WorkflowTracker, default_tracking_uri, experiment_link

    if to_run:  # a fully cached chain only reads manifests: no need to start or join Ray
        print(ensure_ray(recipe.ray), flush=True)
    tracking_uri = default_tracking_uri(artifact_root)
    tags = {
        "recipe": recipe.name,
        "recipe_file": recipe.source,
        "overrides": " ".join(args.overrides),
        "artifact_root": artifact_root,
        "host": socket.gethostname(),
        "ray_job_submission_id": ray_job_submission_id(),
        "stages_to_run": ",".join(to_run),
    }
    started = time.time()
    reports: list = []
    with (
        WorkflowTracker(tracking_uri, recipe.experiment, artifact_root) as tracker,
        tracker.parent_run(recipe.name, tags, recipe_text(recipe)) as parent_id,
    ):
        try:
            execute_plan(plan, tracker, reports)
        except BadInputError as err:
            failed = reports[-1].stage if reports else "?"
            print(f"error: stage {failed}: {err}", file=sys.stderr)
            return 2
        finally:
            summary = format_summary(reports) if reports else "(no stage finished)"
            tracker.log_text(parent_id, summary + "\n", "summary.txt")
            tracker.metrics_logger(parent_id)(
                {
                    "workflow_duration_s": time.time() - started,
                    "stages_ran": sum(r.status in ("ran", "resumed") for r in reports),
                    "stages_cached": sum(r.status == "cached" for r in reports),
                }
            )
            print("\n" + summary, flush=True)
    ran = [r.stage for r in reports if r.status in ("ran", "resumed")]
    print("every stage was cached: nothing executed" if not ran else f"executed: {', '.join(ran)}")
    print(
        f"MLflow: {tracking_uri} (experiment {recipe.experiment!r}); open it with:\n"
        + experiment_link(tracking_uri, tracker.experiment_id)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
