"""Training pairs: (original, dense) and (short dense, long dense) with same-kind hard negatives."""

from __future__ import annotations

import random

import pyarrow as pa

from pipelines.finetune_text.loop import order_sides, swap_sides
from pipelines.finetune_text.pairs import first_sentences, training_pairs


def test_first_sentences_needs_a_longer_caption():
    assert first_sentences("One. Two! Three?", 2) == "One. Two!"
    assert first_sentences("Only one sentence.", 1) is None
    assert first_sentences(None, 1) is None


def _images() -> pa.Table:
    return pa.table(
        {
            "key": ["a", "b", "c", "d"],
            "original": ["red circle", "red circle photo", "blue square", "blue square pic"],
            "dense": [
                "A red circle. It is top left.",
                "A red circle. It is top right.",
                "A blue square. It is bottom.",
                "A blue square. It is centre.",
            ],
            "short_dense": ["A red circle.", "A red circle.", None, "A blue square."],
        }
    )


def test_both_kinds_of_pairs_and_negatives_of_the_same_kind():
    table = training_pairs(_images(), "mined", seed=0)
    kinds = table["kind"].to_pylist()
    assert kinds.count("original_dense") == 4 and kinds.count("short_long") == 3  # c has no short form
    rows = table.to_pylist()
    by_key = {r["key"]: r for r in rows if r["kind"] == "original_dense"}
    assert by_key["a"]["hard_negative_2"] == "A red circle. It is top right."  # b: closest wording
    assert by_key["a"]["hard_negative_1"] == "red circle photo"
    for row in rows:
        assert row["hard_negative_2"] != row["caption_2"]
    plain = training_pairs(_images(), "none")
    assert plain.column_names == ["key", "kind", "caption_1", "caption_2"] and plain.num_rows == 7


def test_swap_sides_gives_the_key_side_its_own_kind_of_negative():
    rows = training_pairs(_images(), "mined").to_pydict()
    columns = {name: rows[name] for name in ("caption_1", "caption_2", "hard_negative_1", "hard_negative_2")}
    batch = swap_sides(columns, random.Random(1))
    for i, key in enumerate(batch["key_side"]):
        flipped = key == columns["caption_1"][i]
        expected = columns["hard_negative_1" if flipped else "hard_negative_2"][i]
        assert batch["hard_negative"][i] == expected
        assert batch["query_side"][i] == columns["caption_2" if flipped else "caption_1"][i]
    assert {key == columns["caption_1"][i] for i, key in enumerate(batch["key_side"])} == {True, False}


def test_first_query_side_keeps_the_dense_caption_and_its_negative_on_the_key_side():
    rows = training_pairs(_images(), "mined").to_pydict()
    columns = {name: rows[name] for name in ("caption_1", "caption_2", "hard_negative_1", "hard_negative_2")}
    batch = order_sides(columns, "first", random.Random(1))
    assert batch == {
        "query_side": columns["caption_1"],
        "key_side": columns["caption_2"],
        "hard_negative": columns["hard_negative_2"],
    }
    assert order_sides(columns, "random", random.Random(1)) == swap_sides(columns, random.Random(1))


def test_random_negatives_by_default_are_another_images_captions_of_the_same_kind():
    """The release's negative: a random other image's caption, seeded."""
    table = training_pairs(_images(), seed=0)
    assert table.equals(training_pairs(_images(), "random", seed=0))
    images = _images().to_pylist()
    for row in table.to_pylist():
        own = next(image for image in images if image["key"] == row["key"])
        assert row["hard_negative_2"] != own["dense"]
        first = "original" if row["kind"] == "original_dense" else "short_dense"
        assert any(
            image["dense"] == row["hard_negative_2"] and image[first] == row["hard_negative_1"]
            for image in images
            if image["key"] != row["key"]
        )
    assert not table.equals(training_pairs(_images(), "random", seed=1))


def test_mined_negatives_pass_over_near_duplicates_above_the_ceiling():
    from ops.hard_negatives import hashed_word_counts, mine_hard_negatives

    texts = [
        "a red circle above a blue square",
        "the red circle above a blue square",  # the same scene, recaptioned: a false negative
        "a red circle below a green square",
        "two yellow stars",
    ]
    unlimited = mine_hard_negatives(texts, block_rows=8)
    assert unlimited[0] == 1  # without a ceiling, the near-duplicate is picked
    capped = mine_hard_negatives(texts, block_rows=8, max_similarity=0.85)
    similarity = hashed_word_counts(texts) @ hashed_word_counts(texts).T
    assert similarity[0, 1] > 0.85 > similarity[0, 2]
    assert capped[0] == 2 and capped[1] == 2  # the next closest, under the ceiling
