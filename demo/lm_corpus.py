"""The text a tiny LLM is pretrained on, as a causal language model, before anything else uses it.

A deterministic stream of documents, each drawn from one of four kinds:
  english   rich-scene descriptions in varied phrasings and object orders (not the dense captions' one
            fixed wording)
  l2        the same kind of scenes described in the second language (demo/second_language.py)
  parallel  English sentences each followed by its translation
  general   text that is not about scenes: arithmetic, counting, facts, short stories
  code_switched (off unless weighted)  English descriptions with some words given in the second
            language, in English word order: how multilingual LMs come to share word meanings
With `synonym_share`, the English descriptions give some scene words as their synonyms (demo/synonyms.py):
words that no caption of CC fine-tuning or vision training contains. All of it so that the model is a
language model of a small world, not a caption model. Its scenes come from a
stream of their own ("lm" split seeds), and any scene that shows what a held-out scene shows is dropped
and counted: held-out scenes are never part of any training.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator

from demo.basic_scenes import BACKGROUNDS, COLORS
from demo.rich_scenes import (
    COUNT_WORDS,
    ENGLISH,
    FUNCTION_WORDS,
    ORDINALS,
    RichObject,
    RichScene,
    attribute_sentence,
    caption_sentences,
    count_sentence,
    header_sentence,
    noun_phrase,
    object_sentence,
    relation_sentence,
    relation_words,
    rich_dense_caption,
    rich_vocabulary,
    sample_rich_scene,
)
from demo.second_language import (
    L2,
    l2_vocabulary,
    lexicon,
)
from demo.synonyms import replace_words, synonym_vocabulary
from ops.config_schema import check
from ops.hashing import IN_KEY_WHEN_SET

KINDS = ("english", "l2", "parallel", "general")  # the kinds `weights` weighs
ALL_KINDS = (*KINDS, "code_switched")
WORD = re.compile(r"[A-Za-z]+")
NUMBERS = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"),
    *("nineteen", "twenty"),
)
NAMES = ("anna", "ben", "clara", "david", "emma", "felix", "greta", "hugo", "ida", "jonas")
TOYS = ("ball", "kite", "box", "cup", "hat", "book", "car", "boat")
PLACES = ("garden", "kitchen", "park", "school", "house", "street", "shop", "forest")
FACTS = (
    "the sky is blue on a clear day.",
    "grass is green and the sun is yellow.",
    "a square has four sides and four corners.",
    "a triangle has three sides.",
    "a hexagon has six sides, like a cell of a honeycomb.",
    "a circle has no corners at all.",
    "a diamond is a square turned on its corner.",
    "a cross is made of two bars.",
    "snow is white and coal is black.",
    "an orange is orange and a lemon is yellow.",
    "purple is made by mixing red and blue.",
    "green is made by mixing blue and yellow.",
    "the top of a page is above the bottom of the page.",
    "we read a page from left to right, row after row.",
    "a large box can hold a small box.",
    "a striped shirt has lines across it.",
    "a hollow ball is empty inside.",
    "pink is a light red, and beige is a light brown.",
    "teal is a colour between blue and green.",
    "gray is between white and black.",
)


@dataclasses.dataclass(frozen=True)
class LmCorpusConfig:
    seed: int = 0
    family_size: int = 4  # scenes per family, as the scenes stage draws them
    # Shares of documents by kind, in KINDS order; they need not sum to 1 (they are weights).
    weights: tuple[float, float, float, float] = (0.45, 0.2, 0.1, 0.25)
    parallel_sentences: int = 4  # English sentences, each with its translation, per parallel document
    # Weight of code-switched documents beside `weights` (0: none, and the corpus is as it was), and the
    # share of an English description's translatable words given in the second language.
    code_switched_weight: float = dataclasses.field(default=0.0, metadata=IN_KEY_WHEN_SET)
    switch_share: float = dataclasses.field(default=0.3, metadata=IN_KEY_WHEN_SET)
    # Share of the scene words of English descriptions given as their synonym (0: none, and the corpus is
    # as it was, draw for draw).
    synonym_share: float = dataclasses.field(default=0.0, metadata=IN_KEY_WHEN_SET)

    def __post_init__(self):
        check(len(self.weights) == len(KINDS), "weights", f"one weight per kind {KINDS}", self.weights)
        check(
            all(w >= 0 for w in self.weights) and sum(self.weights) > 0,
            "weights",
            "non-negative, not all 0",
            self.weights,
        )
        check(self.family_size > 0, "family_size", "a positive count", self.family_size)
        check(self.parallel_sentences > 0, "parallel_sentences", "a positive count", self.parallel_sentences)
        check(
            self.code_switched_weight >= 0, "code_switched_weight", "zero or more", self.code_switched_weight
        )
        check(0 < self.switch_share <= 1, "switch_share", "in (0, 1]", self.switch_share)
        check(0 <= self.synonym_share <= 1, "synonym_share", "in [0, 1]", self.synonym_share)


@dataclasses.dataclass
class CorpusStats:
    documents: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(ALL_KINDS, 0))
    held_out_scenes_dropped: int = 0


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _object_variant(obj: RichObject, rng: random.Random) -> str:
    place = f"the {ORDINALS[obj.row]} row and the {ORDINALS[obj.column]} column"
    return rng.choice(
        (
            object_sentence(obj),
            f"There is {noun_phrase(obj)} in {place}.",
            f"{_cap(noun_phrase(obj))} sits in {place}.",
            f"You can see {noun_phrase(obj)} in {place}.",
        )
    )


def _relation_variant(a: RichObject, b: RichObject, rng: random.Random) -> str:
    words = " ".join(relation_words(a, b))
    return rng.choice((relation_sentence(a, b), f"The {a.name} is {words} the {b.name}."))


def english_description(scene: RichScene, rng: random.Random) -> str:
    objects = list(scene.objects)
    if rng.random() < 0.4:
        rng.shuffle(objects)
    count = COUNT_WORDS[len(objects)]
    sentences = [
        rng.choice(
            (header_sentence(scene), f"A plain {scene.background} background with {count} objects on it.")
        )
    ]
    for i, obj in enumerate(objects):
        sentences.append(_object_variant(obj, rng))
        if rng.random() < 0.5:
            sentences.append(attribute_sentence(obj))
        if i + 1 < len(objects) and rng.random() < 0.7:
            sentences.append(_relation_variant(obj, objects[i + 1], rng))
    if rng.random() < 0.5:
        sentences.append(count_sentence(scene))
    return " ".join(sentences)


def l2_description(scene: RichScene, rng: random.Random) -> str:
    objects = list(scene.objects)
    if rng.random() < 0.4:
        rng.shuffle(objects)
    return " ".join(caption_sentences(scene, L2, objects))


def parallel_document(scene: RichScene, rng: random.Random, count: int) -> str:
    """English sentences, each followed by ' = ' and its translation."""
    pairs = list(zip(caption_sentences(scene, ENGLISH), caption_sentences(scene, L2)))
    chosen = rng.sample(pairs, min(count, len(pairs)))
    return " ".join(f"{en} = {l2}" for en, l2 in chosen)


def code_switched_document(scene: RichScene, rng: random.Random, share: float) -> str:
    """An English description whose translatable words are each given in the second language with
    probability `share`, in English word order."""
    table = lexicon()

    def switch(match: re.Match) -> str:
        word = match.group(0)
        translated = table.get(word.lower())
        if translated is None or rng.random() >= share:
            return word
        return translated.capitalize() if word[0].isupper() else translated

    return WORD.sub(switch, english_description(scene, rng))


def general_document(rng: random.Random) -> str:
    """A few sentences of world text: sums, counting, facts, a short story."""
    kind = rng.randrange(4)
    if kind == 0:
        sums = []
        for _ in range(rng.randint(2, 4)):
            a, b = rng.randint(0, 10), rng.randint(0, 10)
            sums.append(f"{NUMBERS[a]} plus {NUMBERS[b]} is {NUMBERS[a + b]}.")
        return _cap(" ".join(sums))
    if kind == 1:
        start = rng.randint(0, 12)
        return _cap(", ".join(NUMBERS[start : start + rng.randint(3, 8)]) + ".")
    if kind == 2:
        return " ".join(_cap(f) for f in rng.sample(FACTS, rng.randint(2, 4)))
    first, second = rng.sample(NAMES, 2)
    toy, place = rng.choice(TOYS), rng.choice(PLACES)
    color, other = rng.sample(list(COLORS), 2)
    return (
        f"{_cap(first)} has a {color} {toy}. {_cap(first)} gives the {toy} to {second} in the {place}. "
        f"{_cap(second)} paints it {other}, and now the {toy} is {other}. "
        f"The {place} has a {rng.choice(list(BACKGROUNDS))} wall."
    )


def documents(
    config: LmCorpusConfig, stream: str, held_out: frozenset, stats: CorpusStats | None = None
) -> Iterator[str]:
    """Endless documents of one stream ('train' or 'validation', disjoint seeds). `held_out` holds the
    dense captions of the scenes no corpus may show (a rich scene's dense caption names everything it
    shows, so equal captions mean equal scenes)."""
    stats = stats if stats is not None else CorpusStats()
    rng = random.Random(f"lm-corpus/{config.seed}/{stream}")
    scene_index = 0

    def next_scene() -> RichScene:
        nonlocal scene_index
        while True:
            scene = sample_rich_scene(config.seed, f"lm-{stream}", scene_index, config.family_size, "lm")
            scene_index += 1
            if rich_dense_caption(scene) not in held_out:
                return scene
            stats.held_out_scenes_dropped += 1

    # The extra kind is last: with weight 0 the same draws pick the same kinds as without it.
    weights = (*config.weights, config.code_switched_weight)
    while True:
        kind = rng.choices(ALL_KINDS, weights=weights)[0]
        stats.documents[kind] += 1
        if kind == "english":
            text = english_description(next_scene(), rng)
            if config.synonym_share:
                text = replace_words(text, lambda word: rng.random() < config.synonym_share)
            yield text
        elif kind == "l2":
            yield l2_description(next_scene(), rng)
        elif kind == "parallel":
            yield parallel_document(next_scene(), rng, config.parallel_sentences)
        elif kind == "code_switched":
            yield code_switched_document(next_scene(), rng, config.switch_share)
        else:
            yield general_document(rng)


def vocabulary_lines() -> list[str]:
    """Every word the corpus can use, English and L2, for the tokenizer."""
    general = [*NUMBERS, *NAMES, *TOYS, *PLACES, *FACTS, "plus", "has", "gives", "paints", "now", "wall"]
    general += ["sits", "you", "can", "see", "with", *FUNCTION_WORDS]
    return [*rich_vocabulary(), *l2_vocabulary(), *synonym_vocabulary(), " ".join(general)]
