"""Hard-negative mining: the closest-worded caption of another image, never itself or a duplicate."""

from __future__ import annotations

import numpy as np

from ops.hard_negatives import hashed_word_counts, mine_hard_negatives


def test_rows_are_unit_length_and_similar_wording_scores_higher():
    features = hashed_word_counts(["a red circle", "a red circle left", "blue square top", ""])
    assert np.allclose(np.linalg.norm(features[:3], axis=1), 1.0) and not features[3].any()
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2]


def test_partner_is_the_closest_other_caption_and_never_a_duplicate():
    texts = [
        "a small red circle at the top left",
        "a small red circle at the top right",
        "a large blue square at the bottom",
        "a large blue square at the bottom centre",
        "a small red circle at the top left",  # a duplicate of row 0: never its negative
    ]
    partner = mine_hard_negatives(texts, block_rows=64)
    assert partner[0] == 1 and partner[1] in (0, 4) and partner[2] == 3 and partner[3] == 2
    assert all(texts[p] != texts[i] for i, p in enumerate(partner))


def test_blocks_cover_every_row_and_a_lone_last_row_joins_the_previous_block():
    texts = [f"caption number {i} with words {i % 7} and {i % 5}" for i in range(101)]
    partner = mine_hard_negatives(texts, block_rows=20, seed=3)
    assert partner.shape == (101,) and (partner >= 0).all()
    assert all(p != i for i, p in enumerate(partner))


def test_all_identical_texts_still_get_a_partner_so_no_pair_is_lost():
    partner = mine_hard_negatives(["same"] * 4, block_rows=8)
    assert all(0 <= p < 4 and p != i for i, p in enumerate(partner))  # a random other row stands in
