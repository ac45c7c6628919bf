"""Negatives for caption-contrastive training, one per pair beside the in-batch ones: a random other
image's caption (the LLM2CLIP release's choice), or a mined one, the most similar caption of another image
by bag-of-words cosine over hashed word counts, under a similarity ceiling.

Cheap on purpose: both run once over the pair table before training, with no model. Similar wording
(same shapes, colours, places) is what makes a negative hard for a caption encoder; but on web data the
most similar caption is often another caption of the same scene (a near-duplicate image), a false
negative, which the ceiling passes over. The model-mined variant (nearest neighbours under the base
encoder) would cost a full embedding pass.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

HASH_DIMS = 4096  # hashed vocabulary size; collisions only blur similarity a little
WORD = re.compile(r"\w+")


def hashed_word_counts(texts: list[str], dims: int = HASH_DIMS) -> np.ndarray:
    """[n, dims] float32, each row L2-normalised (zero rows stay zero)."""
    matrix = np.zeros((len(texts), dims), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in WORD.findall(text.lower()):
            matrix[row, zlib.crc32(word.encode()) % dims] += 1.0
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def random_negatives(count: int, seed: int = 0) -> np.ndarray:
    """Index of each row's negative: another row, uniformly at random (never itself, for count > 1)."""
    if count < 2:
        return np.zeros(count, dtype=np.int64)
    offsets = np.random.default_rng(seed).integers(1, count, size=count)
    return (np.arange(count) + offsets) % count


def mine_hard_negatives(
    texts: list[str], block_rows: int = 2048, seed: int = 0, max_similarity: float = float("inf")
) -> np.ndarray:
    """Index of each text's hard negative: the most similar text within its block of block_rows rows
    (blocks of a shuffled order keep memory at block_rows^2), never itself, an identical text or one
    whose similarity is above max_similarity (a likely caption of the same scene). Where a block holds
    no such candidate, a random other row stands in, so no pair is lost."""
    count = len(texts)
    if block_rows < 2:
        raise ValueError(f"block_rows must be at least 2, got {block_rows}")
    order = np.random.default_rng(seed).permutation(count)
    partner = np.full(count, -1, dtype=np.int64)
    starts = list(range(0, count, block_rows))
    if len(starts) > 1 and count - starts[-1] < block_rows // 2:
        starts.pop()  # a small last block joins the previous one, so it has candidates to pick from
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else count
        members = order[start:end]
        block_texts = [texts[i] for i in members]
        features = hashed_word_counts(block_texts)
        similarity = features @ features.T
        # Equal hashes stand for equal texts: a rare collision only skips one candidate.
        hashes = np.array([hash(t) for t in block_texts])
        same_text = hashes[:, None] == hashes[None, :]
        similarity[same_text] = -np.inf  # itself and exact duplicates are not negatives
        similarity[similarity > max_similarity] = -np.inf  # nor near-duplicates
        best = similarity.argmax(axis=1)
        valid = np.isfinite(similarity[np.arange(len(members)), best])
        partner[members[valid]] = members[best[valid]]
    missing = np.flatnonzero(partner < 0)
    partner[missing] = random_negatives(count, seed + 1)[missing]
    return partner
