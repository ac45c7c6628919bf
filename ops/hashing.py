"""Canonical JSON and content keys: same stage, code version, config and inputs give the same key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_LENGTH_HEX = 16
# Field metadata for settings that say where or how in parallel the work runs, never what it produces
# (img2dataset's distributor, Ray Train's placement strategy): a run on a cluster reuses a laptop's cache.
NOT_IN_KEY = {"in_key": False}
# Field metadata for an option added after artifacts exist: it enters the key only when set to other than
# its default, so existing artifacts keep their keys and setting the option re-keys the stage.
IN_KEY_WHEN_SET = {"in_key": "when_set"}


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and mappings as JSON-ready builtins, so hashing never depends on Python types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        # 1.0 and 1 must hash alike: YAML and --set overrides spell numbers either way.
        return int(value)
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: a stable text for hashing."""
    return json.dumps(to_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(stage: str, code_version: str, config: Any, input_keys: Mapping[str, str]) -> str:
    """Hex digest naming a stage's artifact; any change in its inputs' keys changes it too."""
    payload = {
        "stage": stage,
        "code_version": code_version,
        "config": to_plain(_keyed_fields(config)),
        "inputs": dict(sorted(input_keys.items())),
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:KEY_LENGTH_HEX]


def _keyed_fields(value: Any) -> Any:
    """value with the fields marked NOT_IN_KEY left out, and those marked IN_KEY_WHEN_SET left out while
    they hold their default, at any depth."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _keyed_fields(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if _in_key(f, getattr(value, f.name))
        }
    return value


def _in_key(field: dataclasses.Field, value: Any) -> bool:
    rule = field.metadata.get("in_key", True)
    if rule == "when_set":
        return value != field.default
    return bool(rule)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys (``llm.hidden_size``), for MLflow params."""
    plain = to_plain(value)
    if not isinstance(plain, dict):
        return {prefix: plain}
    flat: dict[str, Any] = {}
    for key, item in plain.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(item, dict) and item:
            flat.update(flatten(item, dotted))
        else:
            flat[dotted] = item
    return flat
