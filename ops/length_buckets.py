"""Batches of similar token length, so that a padded batch wastes little compute.

Sorting a shard's captions by length and cutting the sorted order into batches is the simplest
bucketing; outputs are put back in the original order by the caller (keys stay 1:1 with the shard).
"""

from __future__ import annotations


def length_sorted_batches(lengths: list[int], batch_size: int, bucketing: bool = True) -> list[list[int]]:
    """Indices into `lengths`, in batches of at most batch_size; with bucketing, by ascending length."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = (
        sorted(range(len(lengths)), key=lambda i: (lengths[i], i)) if bucketing else list(range(len(lengths)))
    )
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padded_token_count(lengths: list[int], batches: list[list[int]]) -> tuple[int, int]:
    """(padding tokens, total tokens incl. padding) when each batch is padded to its longest member."""
    padding, total = 0, 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        total += longest * len(batch)
        padding += sum(longest - lengths[i] for i in batch)
    return padding, total
