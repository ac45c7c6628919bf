"""Recipes: YAML files naming a config section per stage, with dotted --set overrides, validated."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ops.config_schema import ConfigError, build_config, check
from ops.stage import StageSpec


@dataclasses.dataclass(frozen=True)
class RayConfig:
    # Logical CPUs for a local Ray started by the workflow. More than the cores is deliberate on small
    # machines: Ray Data actor pipelines starve with exactly 2 (docs/cpu_stack.md).
    num_cpus: int = 4
    # Ray's object store for a local start, in MiB; 0 lets Ray choose.
    object_store_mib: int = 0

    def __post_init__(self):
        check(self.num_cpus > 0, "num_cpus", "a positive number of logical CPUs", self.num_cpus)
        check(self.object_store_mib >= 0, "object_store_mib", "zero or more MiB", self.object_store_mib)


@dataclasses.dataclass(frozen=True)
class StageEstimate:
    stage: str
    gpus: int = 0  # GPUs the stage keeps busy (0: CPU only)
    hours: float = 0.0  # wall-clock hours on that hardware, an estimate
    basis: str = ""  # how the number was reached, so a reader can redo it for their hardware

    def __post_init__(self):
        check(self.gpus >= 0, "gpus", "zero or more GPUs", self.gpus)
        check(self.hours > 0, "hours", "a positive number of hours", self.hours)


@dataclasses.dataclass(frozen=True)
class ResourcesConfig:
    """What a recipe expects of the cluster and what each stage should cost; --dry-run prints it."""

    gpus: int = 0  # GPUs in the cluster the recipe is written for
    gpu_type: str = ""  # e.g. "H100 80GB"
    cpu_nodes: str = ""  # CPU-side needs, e.g. for img2dataset
    estimates: tuple[StageEstimate, ...] = ()

    def __post_init__(self):
        check(self.gpus >= 0, "gpus", "zero or more GPUs", self.gpus)
        for i, estimate in enumerate(self.estimates):
            check(
                estimate.gpus <= self.gpus,
                f"estimates[{i}].gpus",
                f"at most gpus ({self.gpus})",
                estimate.gpus,
            )


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    experiment: str  # MLflow experiment the runs go to
    description: str
    ray: RayConfig
    stages: dict[str, Any]  # stage name -> validated config dataclass, in chain order
    source: str  # the file it came from, for messages
    resources: ResourcesConfig | None = None


_RESERVED = ("name", "experiment", "description", "ray", "resources")


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply 'a.b.c=value' in place; the value is parsed as YAML, so 128 is an int and true a bool."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. scenes.num_train=64")
    dotted, raw = assignment.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r}: empty key")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def parse_recipe(
    data: Any, source: str, chain: tuple[StageSpec, ...], overrides: tuple[str, ...] = ()
) -> Recipe:
    """A validated Recipe from YAML data; every error names the file and the dotted field."""
    try:
        check(isinstance(data, dict), "recipe", "a mapping at the top level", type(data).__name__)
        data = copy.deepcopy(data)
        for assignment in overrides:
            apply_override(data, assignment)
        known = {spec.name: spec for spec in chain}
        unknown = sorted(set(data) - set(known) - set(_RESERVED))
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: unknown key; a recipe has {', '.join(_RESERVED)} and stage sections "
                f"({', '.join(known)})"
            )
        check(isinstance(data.get("name"), str) and data["name"], "name", "a recipe name", data.get("name"))
        stages = {}
        for spec in chain:
            if spec.name in data:
                stages[spec.name] = build_config(spec.config_cls, data[spec.name], spec.name)
        check(bool(stages), "recipe", "at least one stage section", sorted(data))
        for name, config in stages.items():
            needed = known[name].inputs_for(config)
            missing = [dep for dep in needed if dep not in stages]
            check(not missing, name, f"its input stages {needed} in the recipe", sorted(stages))
        resources = None
        if data.get("resources") is not None:
            resources = build_config(ResourcesConfig, data["resources"], "resources")
            estimated = [e.stage for e in resources.estimates]
            for i, stage in enumerate(estimated):
                check(stage in stages, f"resources.estimates[{i}].stage", f"one of {sorted(stages)}", stage)
            missing = [name for name in stages if name not in estimated]
            check(
                not missing,
                "resources.estimates",
                f"an estimate for every stage (missing {missing})",
                estimated,
            )
        return Recipe(
            resources=resources,
            name=data["name"],
            experiment=str(data.get("experiment", f"llm2clip-{data['name']}")),
            description=str(data.get("description", "")),
            ray=build_config(RayConfig, data.get("ray"), "ray"),
            stages=stages,
            source=source,
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def merge_recipe_data(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: sections merge key by key, everything else (lists included) replaces, and
    `null` over an inherited section removes it (`finetune_text: null` drops that stage from the chain)."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if value is None and isinstance(merged.get(key), dict):
            del merged[key]
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recipe_data(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_recipe_data(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """The file's YAML, with `extends: other.yaml` (relative to the file) resolved recursively."""
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: extends itself (through {' -> '.join(str(p) for p in seen)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or "extends" not in data:
        return data
    parent = data.pop("extends")
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: extends: expected a recipe file name, got {parent!r}")
    base = read_recipe_data(path.parent / parent, (*seen, path.resolve()))
    if not isinstance(base, dict):
        raise ConfigError(f"{path.parent / parent}: recipe: expected a mapping at the top level")
    # A child recipe is its own recipe: it does not inherit the parent's name or MLflow experiment.
    for own in ("name", "experiment", "description", "resources"):
        base.pop(own, None)
    return merge_recipe_data(base, data)


def load_recipe(path: str | Path, chain: tuple[StageSpec, ...], overrides: tuple[str, ...] = ()) -> Recipe:
    path = Path(path)
    return parse_recipe(read_recipe_data(path), str(path), chain, overrides)
