"""Checks that keep degenerate generations (empty, too short, repetition loops) out of the caption set."""

from __future__ import annotations

import collections
import dataclasses
import re

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class CaptionQualityConfig:
    min_words: int = 3  # fewer words than this: too_short
    # A caption in which one n-gram (n = 1..4) makes up more than this share of the words is a loop,
    # the usual failure of greedy decoding ("a cat a cat a cat ...").
    max_repeated_ngram_share: float = 0.5
    min_words_for_repetition_check: int = 8  # short captions may repeat a word legitimately


def repeated_ngram_share(words: list[str], n: int) -> float:
    if len(words) < n * 2:
        return 0.0
    grams = collections.Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return grams.most_common(1)[0][1] * n / len(words)


def rejection_reason(caption: str, config: CaptionQualityConfig) -> str | None:
    """None for a usable caption, else why it is rejected: empty_caption, too_short or repetition_loop."""
    words = [w.lower() for w in _WORD.findall(caption or "")]
    if not words:
        return "empty_caption"
    if len(words) < config.min_words:
        return "too_short"
    if len(words) >= config.min_words_for_repetition_check and any(
        repeated_ngram_share(words, n) > config.max_repeated_ngram_share for n in (1, 2, 3, 4)
    ):
        return "repetition_loop"
    return None
