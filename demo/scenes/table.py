"""The scenes stage's table (tables/{split}-{shard}.parquet: one row per scene with its image path and
captions) and how the other stages read it: the download stage serves its images, tiny_models and
lm_pretrain keep its held-out captions out of their corpora."""

from __future__ import annotations

import pyarrow as pa

from ops.artifact_dir import ArtifactDir
from ops.image_table import read_image_table

SPLITS = ("train", "eval")
TABLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("image_path", pa.string()),
        ("caption", pa.string()),
        ("dense_caption", pa.string()),
        ("num_objects", pa.int32()),
        ("background", pa.string()),
        # The second language's captions (rich scenes only; null otherwise): scored, never trained on.
        ("family", pa.int64()),  # scenes sharing their top half (rich); each basic scene is its own
        ("paraphrase", pa.string()),  # the dense caption reworded and reordered: CRA's other caption
        ("caption_l2", pa.string()),
        ("dense_caption_l2", pa.string()),
        # The dense caption with every scene word as its synonym (rich only): scored, never trained on.
        ("dense_caption_syn", pa.string()),
    ]
)


def read_scene_table(artifact: ArtifactDir, split: str | None = None) -> pa.Table:
    """All rows of a completed scenes artifact (or one split), in key order."""
    return read_image_table(artifact, split, empty=TABLE_SCHEMA)


def held_out_captions(artifact: ArtifactDir) -> frozenset[str]:
    """The held-out (eval) scenes' dense captions: what no corpus or training may show."""
    return frozenset(read_scene_table(artifact, split="eval").column("dense_caption").to_pylist())
