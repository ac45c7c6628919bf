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


def test_where_the_work_runs_is_not_part_of_the_key():
    """A recipe moved to a cluster (img2dataset's ray distributor, Ray Train workers spread over nodes)
    reuses what a single-machine run already computed; what changes results still changes the key."""
    from pipelines.download.config import DownloadConfig
    from pipelines.finetune_text.config import FinetuneTextConfig
    from pipelines.train_vision.config import TrainVisionConfig

    def key(config):
        return content_key("stage", "1", config, {})

    assert key(DownloadConfig(distributor="ray")) == key(DownloadConfig())
    assert key(DownloadConfig(samples_per_shard=7)) != key(DownloadConfig())
    for config_cls in (FinetuneTextConfig, TrainVisionConfig):
        assert key(config_cls(placement_strategy="SPREAD")) == key(config_cls())
        assert key(config_cls(num_workers=3)) != key(config_cls())


@dataclasses.dataclass(frozen=True)
class Grown:
    name: str = "x"
    fused: bool = dataclasses.field(default=False, metadata={"in_key": "when_set"})


def test_an_option_added_later_keys_only_when_set():
    """An option added after artifacts exist leaves their keys as they were until a recipe sets it."""
    from ops.hashing import IN_KEY_WHEN_SET

    assert dict(Grown.__dataclass_fields__["fused"].metadata) == IN_KEY_WHEN_SET

    @dataclasses.dataclass(frozen=True)
    class Before:
        name: str = "x"

    assert content_key("s", "1", Grown(), {}) == content_key("s", "1", Before(), {})
    assert content_key("s", "1", Grown(fused=True), {}) != content_key("s", "1", Grown(), {})
