"""Build frozen config dataclasses from plain mappings (YAML), with errors that name the field.

Each config class validates its values in ``__post_init__`` through :func:`check`; this module checks
keys and types on the way in, so a typo or a wrong type never reaches a stage.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range; the message names it."""


def check(condition: bool, field: str, expected: str, got: Any) -> None:
    """Raise ConfigError('field: expected ..., got ...') unless condition holds."""
    if not condition:
        raise ConfigError(f"{field}: expected {expected}, got {got!r}")


def check_model_reference(value: str, field: str) -> None:
    """A model field holds "" (the upstream stage's model), a URI (checked where it is read), an existing
    local folder or a Hugging Face id ("owner/name" or a legacy "name"). A path that looks local and is not
    there fails now, before any stage runs, rather than as a hub lookup error hours later."""
    if not value or "://" in value:
        return
    path = Path(value).expanduser()
    looks_local = value.startswith(("/", ".", "~")) or value.count("/") > 1
    check(
        path.is_dir() or not looks_local,
        field,
        "an existing local model folder or a Hugging Face id (owner/name); no such folder",
        value,
    )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Value checked against the annotation tp (and made immutable where the dataclass is frozen)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        check(value in args, where, _type_name(tp), value)
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _convert(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        check(value is None, where, "null", value)
        return None
    if dataclasses.is_dataclass(tp):
        return build_config(tp, value, where)
    if tp is bool:
        check(isinstance(value, bool), where, "true or false", value)
        return value
    if tp is int:
        check(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
        return value
    if tp is float:
        check(isinstance(value, int | float) and not isinstance(value, bool), where, "a number", value)
        return float(value)
    if tp is str:
        check(isinstance(value, str), where, "a string", value)
        return value
    if origin in (tuple, list):
        check(isinstance(value, list | tuple), where, "a list", value)
        item_type = args[0] if args else Any
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        check(isinstance(value, Mapping), where, "a mapping", value)
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, value_type, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported annotation {tp!r} in the config class")


def build_config(cls: type, data: Any, where: str) -> Any:
    """An instance of dataclass cls from a mapping; unknown, missing or mistyped keys raise ConfigError."""
    if data is None:
        data = {}
    check(isinstance(data, Mapping), where, f"a mapping of {cls.__name__} fields", data)
    hints = typing.get_type_hints(cls)
    # A field may go by another key in the recipe (metadata "key"): `from`, a Python keyword, is `from_`.
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key; {cls.__name__} accepts: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, field in fields.items():
        dotted = f"{where}.{name}"
        if name in data:
            kwargs[field.name] = _convert(data[name], hints[field.name], dotted)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{dotted}: required, expected {_type_name(hints[field.name])}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # __post_init__ names fields relative to the class; prefix where the class sits in the recipe.
        message = str(err)
        raise ConfigError(message if message.startswith(where) else f"{where}.{message}") from None


def settings_from(cls: type, config: Any, prefix: str = "", **given: Any) -> Any:
    """A settings dataclass of a loop, filled from the stage config's fields of the same names (after
    `prefix`, e.g. "mntp_"); `given` supplies the ones the config names otherwise or does not hold. The
    loops stay free of stage configs, and no field is copied by hand (a renamed one fails here, by name)."""
    values = dict(given)
    for field in dataclasses.fields(cls):
        if field.name not in values:
            name = prefix + field.name
            if not hasattr(config, name):
                raise AttributeError(f"{type(config).__name__} has no field {name!r} for {cls.__name__}")
            values[field.name] = getattr(config, name)
    return cls(**values)
