"""Rich scenes, the second language and the LM corpus: captions that need their length, a language with
its own words and order, and a corpus that never shows a held-out scene."""

from __future__ import annotations

import itertools
import random

import pytest

from demo import rich_scenes
from demo.lm_corpus import KINDS, CorpusStats, LmCorpusConfig, documents, vocabulary_lines
from demo.second_language import l2_dense_caption, l2_object_sentence, l2_short_caption, lexicon
from models.tiny_factory import train_scene_tokenizer


def _family(index: int, size: int = 4):
    return [rich_scenes.sample_rich_scene(0, "eval", i, size, f"k{i}") for i in range(index, index + size)]


@pytest.fixture(scope="module")
def tokenizer():
    corpus = vocabulary_lines() + list(
        itertools.islice(documents(LmCorpusConfig(), "train", frozenset()), 500)
    )
    return train_scene_tokenizer(corpus, 2048)


def test_dense_captions_run_past_77_tokens_and_siblings_differ_only_past_it(tokenizer):
    lengths, shared_prefixes = [], []
    for family in range(0, 64, 4):
        siblings = _family(family)
        ids = [tokenizer(rich_scenes.rich_dense_caption(s))["input_ids"] for s in siblings]
        lengths += [len(i) for i in ids]
        assert len({tuple(i) for i in ids}) == len(ids)  # every sibling has a caption of its own
        for a, b in itertools.combinations(ids, 2):
            shared_prefixes.append(next(n for n, (x, y) in enumerate(zip(a, b)) if x != y))
    assert min(lengths) > 77 and 150 <= sum(lengths) / len(lengths) <= 260, lengths
    # What tells siblings apart starts past CLIP's context: a 77-token cut sees identical text.
    assert min(shared_prefixes) > 77, min(shared_prefixes)


def test_siblings_share_their_top_half_and_render_differently():
    siblings = _family(8)
    tops = {tuple(o for o in s.objects if o.row in rich_scenes.TOP_ROWS) for s in siblings}
    assert len(tops) == 1 and len({s.background for s in siblings}) == 1
    images = [rich_scenes.render_rich_scene(s, 128).tobytes() for s in siblings]
    assert len(set(images)) == len(images)
    for scene in siblings:
        names = [(o.shape, o.color) for o in scene.objects]
        assert len(set(names)) == len(names) and 3 <= len(names) <= 7


def test_second_language_has_its_own_words_and_puts_nouns_first():
    table = lexicon()
    assert len(set(table.values())) == len(table) and not set(table.values()) & set(table)
    scene = _family(0)[0]
    obj = scene.objects[0]
    sentence = l2_object_sentence(obj).rstrip(".").lower().split()
    assert sentence[:4] == [table[obj.shape], table[obj.color], table[obj.pattern], table[obj.size]]
    dense = l2_dense_caption(scene)
    assert dense.count(".") == rich_scenes.rich_dense_caption(scene).count(".")  # sentence for sentence
    assert not set(dense.lower().replace(".", "").split()) & set(table)  # no English word left
    assert l2_short_caption(scene, 1) != rich_scenes.rich_short_caption(scene, 1)


def test_corpus_mixes_every_kind_and_never_shows_a_held_out_scene():
    config = LmCorpusConfig(family_size=1)
    first_scene = rich_scenes.sample_rich_scene(0, "lm-train", 0, 1, "lm")
    held_out = frozenset({rich_scenes.rich_dense_caption(first_scene)})
    stats = CorpusStats()
    docs = list(itertools.islice(documents(config, "train", held_out, stats), 400))
    assert stats.held_out_scenes_dropped == 1
    assert all(stats.documents[kind] > 0 for kind in KINDS), stats.documents
    held_objects = [rich_scenes.object_sentence(o) for o in first_scene.objects]
    assert not any(all(s in doc for s in held_objects) for doc in docs)
    assert any(" = " in doc for doc in docs)  # parallel sentences
    again = list(itertools.islice(documents(config, "train", held_out), 400))
    assert again == docs  # a function of the config and the seed
    validation = list(itertools.islice(documents(config, "validation", held_out), 50))
    scene_documents = {d for d in docs if "column" in d}  # general text may repeat; scenes may not
    assert not scene_documents & set(validation)


def test_short_template_is_shared_by_both_languages():
    rng = random.Random(0)
    scene = _family(0)[1]
    template = rng.randrange(len(rich_scenes.SHORT_TEMPLATES))
    english = rich_scenes.rich_short_caption(scene, template)
    assert scene.objects[0].name in english and scene.objects[1].name in english
    assert lexicon()[scene.objects[0].shape] in l2_short_caption(scene, template)


def test_code_switched_documents_give_some_words_in_the_second_language():
    import itertools
    import re

    from demo.lm_corpus import code_switched_document
    from demo.rich_scenes import sample_rich_scene
    from demo.second_language import lexicon

    table = lexicon()
    scene = sample_rich_scene(0, "lm-train", 0, 4, "lm")
    words = [
        w.lower() for w in re.findall(r"[A-Za-z]+", code_switched_document(scene, random.Random(1), 1.0))
    ]
    assert words and not [w for w in words if w in table]  # share 1: every translatable word switched
    l2_words = set(table.values())
    switched = kept = 0
    for i in range(40):
        text = code_switched_document(sample_rich_scene(0, "lm-train", i, 4, "lm"), random.Random(i), 0.3)
        for word in re.findall(r"[A-Za-z]+", text.lower()):
            switched += word in l2_words
            kept += word in table
    assert 0.2 < switched / (switched + kept) < 0.4
    config = LmCorpusConfig(code_switched_weight=0.5)
    stats = CorpusStats()
    list(itertools.islice(documents(config, "train", frozenset(), stats), 200))
    assert stats.documents["code_switched"] > 0
    plain = CorpusStats()
    list(itertools.islice(documents(LmCorpusConfig(), "train", frozenset(), plain), 200))
    assert plain.documents["code_switched"] == 0
