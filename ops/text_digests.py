"""8-byte digests of strings (urls, keys): what a repeated-value check or a hash partition remembers of a
value instead of the value. Two different strings share one with probability ~n^2 / 2^65 (about 1e-5
among 30M)."""

from __future__ import annotations

import hashlib

import numpy as np


def digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def digests(texts: list[str]) -> np.ndarray:
    return np.array([digest(t) for t in texts], dtype=np.uint64)
