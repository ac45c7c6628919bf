"""finetune_text's pairs without a whole-table process: the driver streams download shards into row
groups (held-out images chosen exactly as a global sort would choose them, negatives drawn within a
group, text-pair sets appended as tasks), and a worker reads only the groups of the windows its steps
reach, resuming mid-epoch on the batches an uninterrupted run sees."""

from __future__ import annotations

import itertools
import json
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.artifact_dir import ArtifactDir
from pipelines.finetune_text.batches import epoch_windows, pair_batches
from pipelines.finetune_text.config import FinetuneTextConfig, TextPairSource
from pipelines.finetune_text.pair_groups import PairGroups
from pipelines.finetune_text.pairs import GROUP_IMAGES, write_pairs


def _download(tmp_path, shards: int, per_shard: int) -> ArtifactDir:
    """A download artifact's per-shard parquet (all finetune_text reads): every 10th image lacks its
    dense caption, every 25th failed to download."""
    artifact = ArtifactDir(str(tmp_path / "download"))
    for shard in range(shards):
        keys = [f"{shard:05d}{i:04d}" for i in range(per_shard)]
        number = [shard * per_shard + i for i in range(per_shard)]
        artifact.write_parquet_atomic(
            f"shards/{shard:05d}.parquet",
            pa.table(
                {
                    "key": keys,
                    "status": ["failed_to_download" if n % 25 == 24 else "success" for n in number],
                    "caption": [f"photo {n}" for n in number],
                    "dense_caption": [
                        None if n % 10 == 3 else f"a long caption of image {n}" for n in number
                    ],
                }
            ),
        )
    return artifact


def test_streamed_pairs_hold_out_what_a_global_sort_would_and_reconcile(tmp_path):
    download = _download(tmp_path, shards=6, per_shard=1000)
    jsonl = tmp_path / "e5.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"query": f"q{i}", "positive": f"p{i}" if i % 7 else ""}) + "\n" for i in range(300)
        )
    )
    source = TextPairSource(name="e5", path=str(jsonl))
    config = FinetuneTextConfig(num_eval_pairs=100, negatives="none", text_pairs=(source,))
    out = ArtifactDir(str(tmp_path / "finetune"))
    counts = write_pairs(ArtifactDir(download.child_uri("shards")), None, config, out)

    every = pa.concat_tables(
        [pq.read_table(download.child_path(f"shards/{n}")) for n in download.list("shards")]
    )
    usable = [
        row["key"]
        for row in every.to_pylist()
        if row["status"] == "success" and row["dense_caption"] is not None
    ]
    expected_held = sorted(sorted(usable, key=lambda k: (zlib.crc32(k.encode()), k))[:100])
    held = pq.read_table(out.child_path("pairs/eval.parquet"))
    assert held["key"].to_pylist() == expected_held
    train = pq.read_table(out.child_path("pairs/train.parquet"))
    captions = train.filter(pa.compute.equal(train["task"], "captions"))
    assert sorted(captions["key"].to_pylist()) == sorted(set(usable) - set(expected_held))
    assert counts.train_images + counts.eval_images == len(usable) == 6000 - 240 - 600
    assert counts.unusable == 6000 - 240 - len(usable)  # succeeded but without a dense caption
    assert counts.text_pairs == {"e5": 300 - 43} and counts.text_rejected == {"missing_positive": 43}
    assert counts.train_rows == train.num_rows == captions.num_rows + 257
    metadata = pq.ParquetFile(out.child_path("pairs/train.parquet")).metadata
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    assert max(sizes) <= 2 * GROUP_IMAGES and len(sizes) >= 3  # read group by group, never whole
    groups = PairGroups.of_parquet(out.child_uri("pairs/train.parquet"))
    assert [set(c) for c in groups.task_counts][-1] == {"e5"}  # a text set's rows are groups of their own
    assert groups.reads == 0  # the footer alone


def test_random_negatives_come_from_the_same_group_and_another_image(tmp_path):
    download = _download(tmp_path, shards=3, per_shard=1500)
    out = ArtifactDir(str(tmp_path / "finetune"))
    shards = ArtifactDir(download.child_uri("shards"))
    write_pairs(shards, None, FinetuneTextConfig(num_eval_pairs=10, negatives="random"), out)
    parquet = pq.ParquetFile(out.child_path("pairs/train.parquet"))
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.read_row_group(group).to_pylist()
        captions = {r["caption_1"] for r in rows}
        assert all(r["hard_negative_1"] in captions and r["hard_negative_1"] != r["caption_1"] for r in rows)


def _stream(groups, steps: int, **kwargs) -> list[dict]:
    return list(itertools.islice(pair_batches(groups, **kwargs), steps))


def _pairs(count: int) -> pa.Table:
    return pa.table(
        {"caption_1": [f"q {i}" for i in range(count)], "caption_2": [f"k {i}" for i in range(count)]}
    )


def test_windows_bound_what_a_worker_reads_and_a_resume_sees_the_same_batches():
    table = _pairs(1000)
    settings = {"batch_size": 8, "world": 2, "seed": 3, "window_rows": 200}
    windows = epoch_windows(PairGroups.of_table(table, 50), 16, 200, seed=3, epoch=0)
    assert [len(w.groups) for w in windows] == [4] * 5 and sum(w.steps for w in windows) == 60
    # Two steps in: only the first window's four groups of 50 were read.
    groups = PairGroups.of_table(table, 50)
    _stream(groups, 2, rank=0, **settings)
    assert groups.reads == 4
    for rank in (0, 1):
        uninterrupted = _stream(PairGroups.of_table(table, 50), 130, rank=rank, **settings)
        resumed = _stream(PairGroups.of_table(table, 50), 57, rank=rank, start_step=73, **settings)
        assert resumed == uninterrupted[73:]
    ranks = [_stream(PairGroups.of_table(table, 50), 60, rank=r, **settings) for r in (0, 1)]
    seen = [q for stream in ranks for batch in stream for q in batch["query_side"]]
    assert len(seen) == len(set(seen)) == 960  # one epoch: each window's 200 rows give 12 global batches
    windows_1 = epoch_windows(PairGroups.of_table(table, 50), 16, 200, seed=3, epoch=1)
    assert [w.groups for w in windows_1] != [w.groups for w in windows]  # each epoch its own group order


def test_one_window_is_a_plain_permutation_of_all_rows():
    """Up to shuffle_window_pairs rows, windows change nothing: the epoch is one permutation."""
    table = _pairs(100)
    grouped = _stream(PairGroups.of_table(table, 7), 20, batch_size=4, rank=1, world=2, seed=5)
    assert grouped == _stream(table, 20, batch_size=4, rank=1, world=2, seed=5)


def test_a_window_smaller_than_a_global_batch_is_refused():
    with pytest.raises(ValueError, match="smaller than one global batch"):
        next(pair_batches(_pairs(100), batch_size=8, rank=0, world=2, seed=0, window_rows=10))
