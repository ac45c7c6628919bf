"""The caption pairs finetune_text trains on, read from the download (and recaption) artifacts.

Per image: (original, dense), plus (short dense, long dense) where a short dense caption exists
(a provided column, or the dense caption's first sentences as DreamLIP does). With negatives on,
each pair also carries the same-kind captions of another image, random or closest-worded (ops.hard_negatives).
"""

from __future__ import annotations

import re
import zlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.hard_negatives import mine_hard_negatives, random_negatives

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TRAINING_COLUMNS = ("key", "kind", "caption_1", "caption_2")
HARD_NEGATIVE_COLUMNS = ("hard_negative_1", "hard_negative_2")


def first_sentences(text: str | None, count: int) -> str | None:
    """The first `count` sentences; None when the text has no more than that (no distinct short form)."""
    if text is None:
        return None
    sentences = SENTENCE_END.split(text.strip())
    if len(sentences) <= count:
        return None
    return " ".join(sentences[:count])


def collect_pairs(
    download: ArtifactDir, recaption: ArtifactDir | None, config
) -> tuple[pa.Table, pa.Table, int]:
    """(train, eval, rows without a usable pair): key, original, dense[, short_dense][, split] per image,
    from img2dataset's per-shard parquet (no image bytes read)."""
    tables = []
    for name in download.list("shards"):
        if name.endswith(".parquet"):
            with download.open(f"shards/{name}") as handle:
                table = pq.read_table(handle)
            tables.append(table.filter(pc.equal(table["status"], "success")))
    if not tables:
        raise ValueError(f"{download.uri}/shards: no img2dataset parquet files; is the download complete?")
    rows = pa.concat_tables(tables, promote_options="permissive")
    if config.dense_caption_source == "recaption":
        captions = [
            pq.read_table(recaption.open(f"captions/{n}"))
            .select(["key", "caption"])
            .rename_columns(["key", "dense"])
            for n in recaption.list("captions")
        ]
        rows = rows.join(pa.concat_tables(captions), "key", join_type="left outer")
    else:
        _require_field(rows, config.dense_caption_column, download)
        rows = rows.append_column("dense", rows[config.dense_caption_column])
    if config.short_dense_source == "column":
        _require_field(rows, config.short_dense_column, download)
        rows = rows.append_column("short_dense", rows[config.short_dense_column])
    elif config.short_dense_source == "first_sentences":
        shorts = [first_sentences(t, config.short_dense_sentences) for t in rows["dense"].to_pylist()]
        rows = rows.append_column("short_dense", pa.array(shorts, pa.string()))
    extra = [c for c in ("short_dense", "split") if c in rows.column_names]
    pairs = rows.select(["key", "caption", "dense", *extra]).rename_columns(
        ["key", "original", "dense", *extra]
    )
    usable = pc.and_(pc.invert(pc.is_null(pairs["original"])), pc.invert(pc.is_null(pairs["dense"])))
    unusable = pairs.num_rows - int(pc.sum(usable).as_py() or 0)
    pairs = pairs.filter(usable).sort_by("key")
    if "split" in pairs.column_names:
        held = pc.equal(pairs["split"], config.eval_split_value)
    else:
        ranks = sorted(range(pairs.num_rows), key=lambda i: zlib.crc32(pairs["key"][i].as_py().encode()))
        chosen = set(ranks[: config.num_eval_pairs])
        held = pa.array([i in chosen for i in range(pairs.num_rows)])
    return pairs.filter(pc.invert(held)), pairs.filter(held), unusable


def training_pairs(
    pairs: pa.Table, negatives: str = "random", seed: int = 0, max_similarity: float = float("inf")
) -> pa.Table:
    """One row per training pair: key, kind (original_dense | short_long), caption_1, caption_2 and,
    with negatives ("random" or "mined", ops/hard_negatives.py), a partner image's captions of the same
    two kinds (hard_negative_1, hard_negative_2)."""
    parts = [_pairs_of_kind(pairs, "original_dense", "original", "dense", negatives, seed, max_similarity)]
    if "short_dense" in pairs.column_names:
        has_short = pairs.filter(pc.invert(pc.is_null(pairs["short_dense"])))
        if has_short.num_rows:
            parts.append(
                _pairs_of_kind(
                    has_short, "short_long", "short_dense", "dense", negatives, seed, max_similarity
                )
            )
    return pa.concat_tables(parts)


def _pairs_of_kind(
    pairs: pa.Table, kind: str, first: str, second: str, negatives: str, seed: int, max_similarity: float
) -> pa.Table:
    columns = {
        "key": pairs["key"],
        "kind": pa.array([kind] * pairs.num_rows, pa.string()),
        "caption_1": pairs[first],
        "caption_2": pairs[second],
    }
    if negatives != "none":
        # The partner is chosen on the second (denser) caption; both of its captions become negatives,
        # so whichever side is drawn as the key, its negative is a caption of the same kind.
        if negatives == "mined":
            chosen = mine_hard_negatives(pairs[second].to_pylist(), seed=seed, max_similarity=max_similarity)
        else:
            chosen = random_negatives(pairs.num_rows, seed)
        partner = pa.array(chosen, pa.int64())
        columns["hard_negative_1"] = pc.take(pairs[first], partner)
        columns["hard_negative_2"] = pc.take(pairs[second], partner)
    return pa.table(columns)


def _require_field(rows: pa.Table, field: str, download: ArtifactDir) -> None:
    if field not in rows.column_names:
        raise ValueError(
            f"{download.uri}/shards: no field {field!r} in the samples; fields are {rows.column_names}"
        )


def read_training_pairs(pairs_uri: str) -> pa.Table:
    """The stage's pairs/train.parquet without its bookkeeping columns: what the loss reads."""
    import fsspec

    with fsspec.open(pairs_uri, "rb") as handle:
        table = pq.read_table(handle)
    return table.drop_columns([c for c in ("key", "kind") if c in table.column_names])


def read_held_out_pairs(eval_pairs_uri: str, query_column: str = "original") -> pa.Table:
    """pairs/eval.parquet: the held-out images' captions that CRA scores, as (original, dense): the
    query column (the original caption, or the short_dense one) under the name "original"."""
    import fsspec

    with fsspec.open(eval_pairs_uri, "rb") as handle:
        table = pq.read_table(handle, columns=[query_column, "dense"])
    return table.rename_columns(["original", "dense"])
