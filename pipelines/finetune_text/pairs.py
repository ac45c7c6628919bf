"""The caption pairs finetune_text trains on, read from the download (and recaption) artifacts.

Per image: (original, dense), plus (short dense, long dense) where a short dense caption exists
(a provided column, or the dense caption's first sentences as DreamLIP does). With negatives on,
each pair also carries the same-kind captions of another image of its row group, random or closest-worded
(ops.hard_negatives).

Flat in dataset size: the driver streams one download shard at a time into pairs/train.parquet, whose
row groups the workers read on demand (batches.py); nothing holds the pair table whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import zlib
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ops.artifact_dir import ArtifactDir
from ops.hard_negatives import mine_hard_negatives, random_negatives
from ops.manifest import count_reasons
from pipelines.finetune_text.text_pairs import read_text_pairs, with_task_columns

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TRAINING_COLUMNS = ("key", "kind", "caption_1", "caption_2")
HARD_NEGATIVE_COLUMNS = ("hard_negative_1", "hard_negative_2")
# Images per row group of pairs/train.parquet: the unit a worker reads, and the pool each pair's negative
# is drawn from (ops.hard_negatives mines within blocks of this size too).
GROUP_IMAGES = 2048


def first_sentences(text: str | None, count: int) -> str | None:
    """The first `count` sentences; None when the text has no more than that (no distinct short form)."""
    if text is None:
        return None
    sentences = SENTENCE_END.split(text.strip())
    if len(sentences) <= count:
        return None
    return " ".join(sentences[:count])


@dataclasses.dataclass
class PairCounts:
    """What write_pairs wrote: images kept for training and held out, images without a usable pair,
    training rows (caption pairs of every kind plus text pairs), text pairs per set and rejected ones."""

    train_images: int = 0
    eval_images: int = 0
    unusable: int = 0
    train_rows: int = 0
    text_pairs: dict[str, int] = dataclasses.field(default_factory=dict)
    text_rejected: dict[str, int] = dataclasses.field(default_factory=dict)


def image_captions(shards: ArtifactDir, recaption: ArtifactDir | None, config) -> Iterator[pa.Table]:
    """Per shard, its successful images as key, original, dense[, short_dense][, split], sorted by key,
    from img2dataset's per-shard parquet in the `shards` folder and recaption's captions of that shard
    (no image bytes read, one shard in memory)."""
    names = [n for n in shards.list() if n.endswith(".parquet") and ".tmp-" not in n]
    if not names:
        raise ValueError(f"{shards.uri}: no img2dataset parquet files; is the download complete?")
    for name in names:
        with shards.open(name) as handle:
            present = set(pq.ParquetFile(handle).schema_arrow.names)
            wanted = {"key", "status", "caption", "split"}
            if config.dense_caption_source != "recaption":
                _require_field(present, config.dense_caption_column, shards, name)
                wanted.add(config.dense_caption_column)
            if config.short_dense_source == "column":
                _require_field(present, config.short_dense_column, shards, name)
                wanted.add(config.short_dense_column)
            handle.seek(0)
            rows = pq.read_table(handle, columns=sorted(wanted & present))
        rows = rows.filter(pc.equal(rows["status"], "success"))
        if config.dense_caption_source == "recaption":
            captions = f"captions/{name}"
            if recaption.exists(captions):
                with recaption.open(captions) as handle:
                    dense = pq.read_table(handle, columns=["key", "caption"]).rename_columns(["key", "dense"])
            else:  # a shard recaption rejected whole: its images have no dense caption
                dense = pa.table({"key": pa.array([], pa.string()), "dense": pa.array([], pa.string())})
            rows = rows.join(dense, "key", join_type="left outer")
        else:
            rows = rows.append_column("dense", rows[config.dense_caption_column])
        if config.short_dense_source == "column":
            rows = rows.append_column("short_dense", rows[config.short_dense_column])
        elif config.short_dense_source == "first_sentences":
            shorts = [first_sentences(t, config.short_dense_sentences) for t in rows["dense"].to_pylist()]
            rows = rows.append_column("short_dense", pa.array(shorts, pa.string()))
        extra = [c for c in ("short_dense", "split") if c in rows.column_names]
        yield (
            rows.select(["key", "caption", "dense", *extra])
            .rename_columns(["key", "original", "dense", *extra])
            .sort_by("key")
        )


class HeldOutByHash:
    """The num_eval images of smallest (crc32(key), key), chosen in one pass with at most num_eval + one
    shard of rows in memory: each shard's rows that fall out of the running selection (and rows it
    pushes out) go to training at once."""

    def __init__(self, num_eval: int):
        self.num_eval = num_eval
        self.held: pa.Table | None = None

    def add(self, images: pa.Table) -> pa.Table:
        """images' rows (and evicted ones) that are not held out, for training."""
        crc = pa.array([zlib.crc32(k.encode()) for k in images["key"].to_pylist()], pa.int64())
        rows = images.append_column("_crc", crc)
        pool = (
            rows if self.held is None else pa.concat_tables([self.held, rows], promote_options="permissive")
        )
        pool = pool.sort_by([("_crc", "ascending"), ("key", "ascending")])
        self.held = pool.slice(0, self.num_eval)
        return pool.slice(self.num_eval).drop_columns(["_crc"])

    def table(self) -> pa.Table | None:
        return None if self.held is None else self.held.drop_columns(["_crc"]).sort_by("key")


class PairGroupWriter:
    """Training pairs written in row groups of GROUP_IMAGES images: each group's negatives are drawn
    among its own images (so no process holds the pair table), and a worker later reads only the
    groups its steps use (batches.py)."""

    def __init__(self, writer: pq.ParquetWriter, config):
        self.writer, self.config = writer, config
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.groups = 0
        self.rows = 0

    def add(self, images: pa.Table) -> None:
        if images.num_rows:
            self.pending.append(images)
            self.pending_rows += images.num_rows
        while self.pending_rows >= GROUP_IMAGES:
            self._flush(GROUP_IMAGES)

    def close(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)

    def _flush(self, count: int) -> None:
        images = pa.concat_tables(self.pending, promote_options="permissive")
        block, rest = images.slice(0, count), images.slice(count)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        seed = zlib.crc32(f"{self.config.seed}/{self.groups}".encode())
        pairs = training_pairs(block, self.config.negatives, seed, self.config.negative_max_similarity)
        if self.writer.schema.get_field_index("task") >= 0:
            pairs = with_task_columns(pairs, self.config.caption_query_instruction)
        self.write(pairs)
        self.groups += 1

    def write(self, rows: pa.Table) -> None:
        """rows as row groups of at most 2 x GROUP_IMAGES (a caption group's two kinds stay together)."""
        schema = self.writer.schema
        self.writer.write_table(rows.select(schema.names).cast(schema), row_group_size=2 * GROUP_IMAGES)
        self.rows += rows.num_rows


def pair_schema(config) -> pa.Schema:
    names = list(TRAINING_COLUMNS)
    if config.negatives != "none":
        names += HARD_NEGATIVE_COLUMNS
    if config.text_pairs or config.caption_query_instruction:
        names += ["task", "query_instruction"]
    return pa.schema([(name, pa.string()) for name in names])


def write_pairs(
    shards: ArtifactDir, recaption: ArtifactDir | None, config, artifact: ArtifactDir
) -> PairCounts:
    """pairs/train.parquet (training rows in row groups), pairs/eval.parquet (held-out images) and, with
    text pairs, pairs/rejected_text_pairs.parquet, streamed one download shard at a time."""
    counts = PairCounts()
    held_by_hash = HeldOutByHash(config.num_eval_pairs)
    eval_schema = None
    with (
        artifact.parquet_writer("pairs/train.parquet", pair_schema(config)) as train_file,
        contextlib.ExitStack() as eval_file,
    ):
        writer = PairGroupWriter(train_file, config)
        eval_writer = None
        for images in image_captions(shards, recaption, config):
            usable = pc.and_(
                pc.invert(pc.is_null(images["original"])), pc.invert(pc.is_null(images["dense"]))
            )
            counts.unusable += images.num_rows - int(pc.sum(usable).as_py() or 0)
            images = images.filter(usable)
            if "split" in images.column_names:
                held = pc.fill_null(pc.equal(images["split"], config.eval_split_value), False)
                held_rows = images.filter(held)
                if eval_writer is None:
                    eval_schema = held_rows.schema
                    eval_writer = eval_file.enter_context(
                        artifact.parquet_writer("pairs/eval.parquet", eval_schema)
                    )
                eval_writer.write_table(held_rows.cast(eval_schema))
                counts.eval_images += held_rows.num_rows
                train = images.filter(pc.invert(held))
            else:
                train = held_by_hash.add(images)
            counts.train_images += train.num_rows
            writer.add(train)
        writer.close()
        rejected_parts = []
        for source in config.text_pairs:  # each set's rows, one task, after the caption groups
            rows, rejected = read_text_pairs(source, config.negatives != "none")
            writer.write(rows)
            counts.text_pairs[source.name] = rows.num_rows
            rejected_parts.append(rejected)
        counts.train_rows = writer.rows
    if eval_writer is None:
        held = held_by_hash.table()
        artifact.write_parquet_atomic("pairs/eval.parquet", held if held is not None else _no_images())
        counts.eval_images = 0 if held is None else held.num_rows
    if config.text_pairs:
        rejected = pa.concat_tables(rejected_parts, promote_options="permissive")
        artifact.write_parquet_atomic("pairs/rejected_text_pairs.parquet", rejected)
        counts.text_rejected = count_reasons(rejected.column("reason").to_pylist())
    return counts


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


def _require_field(present: set[str], field: str, shards: ArtifactDir, shard: str) -> None:
    if field not in present:
        raise ValueError(
            f"{shards.uri}/{shard}: no field {field!r} in the samples; fields are {sorted(present)}"
        )


def _no_images() -> pa.Table:
    return pa.table({name: pa.array([], pa.string()) for name in ("key", "original", "dense")})


def read_held_out_pairs(eval_pairs_uri: str, query_column: str = "original") -> pa.Table:
    """pairs/eval.parquet: the held-out images' captions that CRA scores, as (original, dense): the
    query column (the original caption, or the short_dense one) under the name "original"."""
    import fsspec

    with fsspec.open(eval_pairs_uri, "rb") as handle:
        table = pq.read_table(handle, columns=[query_column, "dense"])
    return table.rename_columns(["original", "dense"])
