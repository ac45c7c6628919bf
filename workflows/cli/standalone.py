"""Shared by the single-stage CLIs (recaption.py, embed.py, evaluate.py here): settings from a recipe
section plus --set overrides, and the manifest that makes their output folder a complete artifact."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from ops.artifact_dir import ArtifactDir
from ops.config_schema import build_config
from ops.hashing import content_key
from ops.manifest import build_manifest
from ops.stage import StageOutcome, StageSpec
from workflows.recipe import apply_override


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
        recipe = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        section = dict(recipe.get(spec.name) or {})
    for assignment in args.overrides:
        apply_override(section, assignment)
    section.update({k: v for k, v in (extra or {}).items() if v is not None})
    return build_config(spec.config_cls, section, spec.name)


def write_manifest(
    output: ArtifactDir,
    spec: StageSpec,
    config,
    input_keys: dict[str, str],
    outcome: StageOutcome,
    started: float,
) -> None:
    key = content_key(spec.name, spec.code_version, config, input_keys)
    output.write_manifest(
        build_manifest(
            stage=spec.name,
            key=key,
            code_version=spec.code_version,
            config=config,
            input_keys=input_keys,
            counts=outcome.counts,
            metrics=outcome.metrics,
            started_at=started,
            finished_at=time.time(),
            extra={"details": outcome.details},
        )
    )
