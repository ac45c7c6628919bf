from __future__ import annotations

import dataclasses

from ops.hashing import canonical_json, content_key, flatten


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = 4


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    rate: float = 1.0
    inner: Inner = Inner()


def test_key_is_stable_and_order_independent():
    a = content_key("s", "1", {"b": 1, "a": 2}, {"up": "k1", "other": "k2"})
    b = content_key("s", "1", {"a": 2, "b": 1}, {"other": "k2", "up": "k1"})
    assert a == b
    assert len(a) == 16


def test_key_changes_with_each_part():
    base = content_key("s", "1", Outer(), {"up": "k"})
    assert content_key("t", "1", Outer(), {"up": "k"}) != base
    assert content_key("s", "2", Outer(), {"up": "k"}) != base
    assert content_key("s", "1", Outer(inner=Inner(width=5)), {"up": "k"}) != base
    assert content_key("s", "1", Outer(), {"up": "k2"}) != base


def test_integral_floats_hash_like_ints():
    assert canonical_json({"rate": 1.0}) == canonical_json({"rate": 1})
    assert content_key("s", "1", Outer(rate=1.0), {}) == content_key(
        "s", "1", {"name": "x", "rate": 1, "inner": {"width": 4}}, {}
    )


def test_flatten_gives_dotted_keys():
    assert flatten(Outer()) == {"name": "x", "rate": 1, "inner.width": 4}
