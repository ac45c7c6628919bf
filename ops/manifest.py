"""The manifest that marks a stage run complete, and the count reconciliation it enforces."""

from __future__ import annotations

import collections
import dataclasses
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from ops.hashing import to_plain


class CountsMismatchError(RuntimeError):
    """A stage reported rows in != rows out + rows rejected: something was lost or duplicated."""


@dataclasses.dataclass(frozen=True)
class StageCounts:
    """Rows (samples, images, captions: whatever the stage's unit is) that went in, out and were rejected."""

    num_in: int
    num_out: int
    num_rejected: int = 0
    rejected_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if min(self.num_in, self.num_out, self.num_rejected) < 0:
            raise CountsMismatchError(f"negative count in {self}")
        if self.num_in != self.num_out + self.num_rejected:
            raise CountsMismatchError(
                f"counts do not reconcile: in={self.num_in} != out={self.num_out}"
                f" + rejected={self.num_rejected}"
            )
        if self.rejected_by_reason and sum(self.rejected_by_reason.values()) != self.num_rejected:
            raise CountsMismatchError(
                f"rejections by reason {self.rejected_by_reason} do not sum to rejected={self.num_rejected}"
            )


def build_manifest(
    *,
    stage: str,
    key: str,
    code_version: str,
    config: Any,
    input_keys: dict[str, str],
    counts: StageCounts,
    metrics: dict[str, float],
    started_at: float,
    finished_at: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest's content; written last, it is what makes the artifact reusable."""
    return {
        "stage": stage,
        "key": key,
        "code_version": code_version,
        "config": to_plain(config),
        "input_keys": dict(sorted(input_keys.items())),
        "counts": to_plain(counts),
        "metrics": dict(metrics),
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_s": round(finished_at - started_at, 3),
        "host": socket.gethostname(),
        **(extra or {}),
    }


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """Rejections per reason, in first-seen order: what StageCounts.rejected_by_reason holds."""
    return dict(collections.Counter(reasons))


def merge_shard_stats(
    per_shard: Iterable[Mapping[str, Any]], fields: Iterable[str] = ()
) -> tuple[dict[str, float], dict[str, int]]:
    """(totals of `fields`, rejections per reason) summed over shards' completion markers, each of which
    may hold a "rejected_by_reason" mapping."""
    fields = tuple(fields)
    totals: dict[str, float] = dict.fromkeys(fields, 0.0)
    by_reason: collections.Counter[str] = collections.Counter()
    for stats in per_shard:
        for name in fields:
            totals[name] += stats[name]
        by_reason.update(stats.get("rejected_by_reason", {}))
    return totals, dict(by_reason)
