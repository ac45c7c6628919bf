"""Synonyms of the rich scenes' attribute words, for claim (E) of the long-caption experiment: words the
vision data never shows.

Every colour, shape, size, fill and background word has one synonym. The LM-pretraining corpus uses the
synonyms in the same sentences as the canonical words (demo/lm_corpus.py, `synonym_share`), as a web
corpus uses "crimson" where another text says "red"; no caption that CC fine-tuning or vision training
sees ever contains one. The experiment scores held-out retrieval with each scene's dense caption in which
every such word is given as its synonym: a text tower trained with the images has never seen those words,
an LLM has read them in the contexts of the ones it was tuned on.
"""

from __future__ import annotations

import re

from demo.basic_scenes import BACKGROUNDS, COLORS, SHAPES
from demo.rich_scenes import PATTERNS, SIZES

SYNONYMS: dict[str, str] = {
    # colours
    "red": "crimson",
    "green": "emerald",
    "blue": "azure",
    "yellow": "golden",
    "purple": "violet",
    "orange": "amber",
    "white": "ivory",
    "black": "ebony",
    # shapes
    "circle": "disc",
    "square": "block",
    "triangle": "wedge",
    "diamond": "rhombus",
    # sizes and fills
    "small": "tiny",
    "medium": "midsize",
    "large": "big",
    "solid": "filled",
    "hollow": "outlined",
    # backgrounds
    "gray": "slate",
    "beige": "sand",
    "teal": "cyan",
    "pink": "rose",
}
_WORD = re.compile(r"[A-Za-z]+")


def _check_complete() -> None:
    # A scene word without a synonym would leave a synonym caption partly canonical without anyone noticing.
    missing = {*COLORS, *SHAPES, *SIZES, *PATTERNS, *BACKGROUNDS} - SYNONYMS.keys()
    if missing:
        raise AssertionError(f"demo.synonyms: no synonym for {sorted(missing)}")


_check_complete()


def replace_words(text: str, chosen) -> str:
    """`text` with each word that has a synonym replaced where chosen(word) is true (capitals kept)."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        synonym = SYNONYMS.get(word.lower())
        if synonym is None or not chosen(word):
            return word
        return synonym.capitalize() if word[0].isupper() else synonym

    return _WORD.sub(swap, text)


def synonym_caption(text: str) -> str:
    """The caption with every colour, shape, size, fill and background word given as its synonym."""
    return replace_words(text, lambda word: True)


def synonym_vocabulary() -> list[str]:
    """Every synonym, for the tokenizer."""
    return [" ".join(SYNONYMS.values())]
