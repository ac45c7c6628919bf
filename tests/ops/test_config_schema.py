from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from ops.config_schema import ConfigError, build_config, check


@dataclasses.dataclass(frozen=True)
class Part:
    width: int = 8

    def __post_init__(self):
        check(self.width > 0, "width", "a positive integer", self.width)


@dataclasses.dataclass(frozen=True)
class Whole:
    model: str
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    names: tuple[str, ...] = ()
    part: Part = Part()
    limit: int | None = None


def test_builds_nested_and_converts():
    cfg = build_config(Whole, {"model": "m", "rate": 1, "names": ["x", "y"], "part": {"width": 3}}, "stage")
    assert cfg == Whole(model="m", rate=1.0, names=("x", "y"), part=Part(width=3))
    assert isinstance(cfg.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": "m", "colour": 1}, "stage.colour: unknown key"),
        ({}, "stage.model: required"),
        ({"model": 3}, "stage.model: expected a string, got 3"),
        ({"model": "m", "rate": "fast"}, "stage.rate: expected a number"),
        ({"model": "m", "rate": True}, "stage.rate: expected a number"),
        ({"model": "m", "mode": "c"}, "stage.mode: expected one of 'a', 'b'"),
        ({"model": "m", "names": "x"}, "stage.names: expected a list"),
        ({"model": "m", "part": {"width": -1}}, "stage.part.width: expected a positive integer, got -1"),
        ({"model": "m", "part": {"depth": 1}}, "stage.part.depth: unknown key"),
        ({"model": "m", "limit": "many"}, "stage.limit: expected int or null"),
        ("not a mapping", "stage: expected a mapping"),
    ],
)
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        build_config(Whole, data, "stage")
    assert message in str(err.value)
