"""A second synthetic language for the cross-lingual part of the long-caption experiment.

Its own vocabulary (pseudo-words drawn once from a fixed seed, one per English word) and its own word
order: nouns before their adjectives, determiners after the noun phrase, places and relations before
the subject's verb, verbs last. It describes the same rich scenes as demo/rich_scenes.py, sentence for
sentence, so every English sentence has a translation (the LM corpus's parallel lines use them). The
language appears only in the LM-pretraining corpus; CC fine-tuning and vision training never see it.
"""

from __future__ import annotations

import functools
import random

from demo.rich_scenes import (
    COUNT_WORDS,
    ORDINALS,
    Phrasing,
    RichObject,
    RichScene,
    caption_sentences,
    relation_words,
    rich_vocabulary,
)

LEXICON_SEED = 20241107
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "tl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
# English words the L2 sentences translate beyond the scene vocabulary.
_EXTRA_WORDS = ("a", "and", "means", "in the other language")


@functools.cache
def lexicon() -> dict[str, str]:
    """English word -> its L2 word; distinct, and never an English word of the scenes."""
    english = sorted({w for line in rich_vocabulary() for w in line.split()} | {"a", "and"})
    rng = random.Random(LEXICON_SEED)
    words: dict[str, str] = {}
    used = set(english)
    for word in english:
        while True:
            candidate = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))
            if candidate not in used:
                used.add(candidate)
                words[word] = candidate
                break
    return words


def translate_words(*english: str) -> str:
    table = lexicon()
    return " ".join(table[w] for w in english)


def _sentence(*english: str) -> str:
    text = translate_words(*english)
    return text[0].upper() + text[1:] + "."


def l2_noun_phrase(obj: RichObject) -> tuple[str, ...]:
    """'a large striped red circle' -> circle red striped large a (as English words, to translate)."""
    return (obj.shape, obj.color, obj.pattern, obj.size, "a")


def l2_header_sentence(scene: RichScene) -> str:
    return _sentence("image", "the", "background", scene.background, "plain", "on", "shapes", "shows")


def l2_count_sentence(scene: RichScene) -> str:
    return _sentence("all", "in", "objects", COUNT_WORDS[len(scene.objects)], "there", "are")


def l2_object_sentence(obj: RichObject) -> str:
    place = ("row", ORDINALS[obj.row], "and", "column", ORDINALS[obj.column], "in")
    return _sentence(*l2_noun_phrase(obj), *place, "there", "is")


def l2_attribute_sentence(obj: RichObject) -> str:
    return _sentence("colour", obj.color, "its", "and", "shape", obj.shape, "a", "its", "is")


def l2_relation_sentence(a: RichObject, b: RichObject) -> str:
    return _sentence("it", b.shape, b.color, "the", *reversed(relation_words(a, b)), "is")


def l2_dense_caption(scene: RichScene) -> str:
    """The dense caption's translation, sentence for sentence and in the same order."""
    return " ".join(caption_sentences(scene, L2))


L2 = Phrasing(
    l2_header_sentence, l2_object_sentence, l2_attribute_sentence, l2_relation_sentence, l2_count_sentence
)


def l2_short_caption(scene: RichScene, template: int) -> str:
    """The short caption's translation (same template index as demo.rich_scenes.rich_short_caption)."""
    parts: list[str] = []
    for i, obj in enumerate(scene.objects[:2]):
        parts += [*(["and"] if i else []), obj.shape, obj.color, "a"]
    subject = translate_words(*parts)
    extra = {
        0: "",
        1: translate_words("of", "photo"),
        2: translate_words("background", scene.background, "a", "on"),
        3: translate_words("with", "picture"),
    }[template]
    return f"{subject} {extra}".strip()


def l2_vocabulary() -> list[str]:
    """Every L2 word, for the tokenizer."""
    return [" ".join(lexicon().values())]
