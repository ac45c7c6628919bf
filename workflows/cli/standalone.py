"""Shared by the single-stage CLIs (recaption.py, embed.py, evaluate.py here): settings from a recipe
section plus --set overrides, the run into an output folder, and the manifest that makes that folder a
complete artifact."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.artifact_dir import ArtifactDir
from ops.config_schema import ConfigError, build_config
from ops.hashing import content_key
from ops.stage import StageContext, StageOutcome, StageSpec, outcome_manifest
from workflows.recipe import apply_override, read_recipe_data


def add_settings_arguments(parser: argparse.ArgumentParser, section: str, uses_ray: bool = True) -> None:
    parser.add_argument("--config", help=f"a recipe YAML whose {section} section gives the settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    if uses_ray:
        parser.add_argument(
            "--num-cpus", type=int, default=4, help="logical CPUs for a local Ray (default 4)"
        )


def section_config(args: argparse.Namespace, spec: StageSpec, extra: dict[str, Any] | None = None):
    """The stage's config from --config's section, then --set overrides, then `extra` (explicit flags)."""
    section: dict = {}
    if args.config:
        # Resolved as the workflow resolves it: a dataset recipe's sections come from `extends:` too.
        recipe = read_recipe_data(Path(args.config)) or {}
        section = dict(recipe.get(spec.name) or {})
    for assignment in args.overrides:
        apply_override(section, assignment)
    section.update({k: v for k, v in (extra or {}).items() if v is not None})
    return build_config(spec.config_cls, section, spec.name)


def run_stage_cli(
    args: argparse.Namespace,
    spec: StageSpec,
    flags: dict[str, Any],
    run: Callable[[Any, StageContext], StageOutcome],
    input_keys: Callable[[Any], dict[str, str]],
    summary: Callable[[StageOutcome, ArtifactDir], str],
    validate: Callable[[Any], None] | None = None,
    uses_ray: bool = True,
) -> int:
    """The body of every stage CLI: the config (section, --set, then `flags`; every flag named there must
    end up set), `validate`, a local or joined Ray, `run` into --output, the manifest, `summary`.
    Exit code 2 on a config error, before anything starts."""
    try:
        config = section_config(args, spec, flags)
        for name in flags:
            if not getattr(config, name):
                raise ConfigError(
                    f"{spec.name}.{name}: required here (--{name} or the config's {spec.name}.{name})"
                )
        if validate is not None:
            validate(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if uses_ray:
        from workflows.ray_runtime import ensure_ray
        from workflows.recipe import RayConfig

        print(ensure_ray(RayConfig(num_cpus=args.num_cpus)), flush=True)
    output = ArtifactDir(args.output)
    started = time.time()
    outcome = run(config, StageContext(artifact=output, inputs={}))
    key_inputs = input_keys(config)
    output.write_manifest(
        outcome_manifest(
            spec,
            content_key(spec.name, spec.code_version, config, key_inputs),
            config,
            key_inputs,
            outcome,
            started,
        )
    )
    print(summary(outcome, output))
    return 0
