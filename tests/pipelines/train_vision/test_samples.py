"""Which samples train_vision deals and holds out, on generated shards with planted faults: samples
without caption features are never dealt, undecodable images give their place to spares and are counted,
a resumed loader stays exact, and the held-out set is chosen by hash and read from its own shards alone."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ops.embedding_sidecar import sidecar_table
from ops.image_transforms import ImageTransformConfig
from pipelines.train_vision.data import deal_training_samples, span_samples, training_batches
from pipelines.train_vision.held_out import held_out_set
from pipelines.train_vision.records import DataPosition, LoaderSettings
from pipelines.train_vision.sample_plan import NO_CAPTION_FEATURES, REJECTED_SCHEMA, plan_samples
from tests.reliability.corpus import write_tar

DIM = 8
NUM_SHARDS, PER_SHARD = 6, 20
NO_CAPTION = {"000010003", "000030011", "000050000"}  # embed rejected every caption of these
UNDECODABLE = {"000020005", "000040017"}  # their jpg member is not an image


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _index(key: str) -> int:
    return int(key[:5]) * PER_SHARD + int(key[5:])


def write_dataset(root: Path, eval_shard: int | None = None) -> tuple[list[str], dict[str, str]]:
    """NUM_SHARDS shards of PER_SHARD samples, with their status tables (a `split` column: "eval" for the
    samples of eval_shard, "train" for the others) and sidecars whose vectors carry the sample's index in
    their first element, both caption fields alike."""
    shards, sidecars = [], {}
    for shard in range(NUM_SHARDS):
        keys = [f"{shard:05d}{i:04d}" for i in range(PER_SHARD)]
        members = []
        for key in keys:
            image = b"\xff\xd8 not a jpeg" if key in UNDECODABLE else _jpeg(_index(key))
            members += [(f"{key}.jpg", image), (f"{key}.txt", f"caption {key}".encode())]
        tar = write_tar(root / f"{shard:05d}.tar", members)
        split = "eval" if shard == eval_shard else "train"
        status = {"key": keys, "status": ["success"] * len(keys), "split": [split] * len(keys)}
        pq.write_table(pa.table(status), root / f"{shard:05d}.parquet")
        vectors = [
            None if key in NO_CAPTION else np.full(DIM, float(_index(key)), np.float32) for key in keys
        ]
        fields = {"original": vectors, "dense": vectors}
        table = sidecar_table(keys, fields, {f: [False] * len(keys) for f in fields}, DIM, "float32")
        pq.write_table(table, root / f"{shard:05d}_sidecar.parquet")
        shards.append(str(tar))
        sidecars[f"{shard:05d}"] = str(root / f"{shard:05d}_sidecar.parquet")
    return shards, sidecars


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("faulty"))


def _settings(**overrides) -> LoaderSettings:
    base = {
        "batch_size": 8,
        "dense_ratio": 0.5,
        "shuffle_buffer": 16,
        "seed": 0,
        "split": "train",
        "transform": ImageTransformConfig(size_px=16),
    }
    return LoaderSettings(**{**base, **overrides})


def test_the_plan_counts_every_sample_once_and_holds_out_by_hash_in_one_shard(dataset, tmp_path):
    shards, sidecars = dataset
    with pq.ParquetWriter(tmp_path / "rejected.parquet", REJECTED_SCHEMA) as rejected:
        plan = plan_samples(shards, sidecars, "train", "eval", 12, rejected)
    held = plan.held_out_keys
    assert len(held) == 12 and len(plan.held_out) == 1  # 12 fit in one shard: only that one is read
    assert not held & NO_CAPTION
    assert plan.num_samples == NUM_SHARDS * PER_SHARD and plan.no_caption == len(NO_CAPTION)
    assert sum(plan.training_counts.values()) + len(held) + plan.no_caption == plan.num_samples
    rows = pq.read_table(tmp_path / "rejected.parquet").to_pylist()
    assert {row["key"] for row in rows} == NO_CAPTION and {row["reason"] for row in rows} == {
        NO_CAPTION_FEATURES
    }
    # a function of the keys: the same plan from shards listed in another order
    assert plan_samples(list(reversed(shards)), sidecars, "train", "eval", 12) == plan
    # the workers deal exactly the samples the plan counted, none held out, none without captions
    settings = _settings(held_out_keys=held)
    dealt = [
        s.key
        for spans in deal_training_samples(plan.training_counts, 3)
        for span in spans
        for s in span_samples(span, sidecars, settings)
    ]
    assert len(dealt) == len(set(dealt)) == sum(plan.training_counts.values())
    assert not set(dealt) & (held | NO_CAPTION)


def test_the_held_out_set_reads_its_own_shard_alone_and_nothing_without_one(dataset):
    shards, sidecars = dataset
    plan = plan_samples(shards, sidecars, "train", "eval", 12)
    loaded = held_out_set(plan.held_out, sidecars, ImageTransformConfig(size_px=16))
    (shard,) = plan.held_out
    decodable = [k for k in plan.held_out[shard] if k not in UNDECODABLE]
    assert loaded.samples_read <= PER_SHARD  # not the dataset's 120: the bytes read are bounded
    assert loaded.arrays["dense"][1].shape == (len(decodable), DIM)
    assert sorted(loaded.arrays["dense"][1][:, 0].int().tolist()) == sorted(_index(k) for k in decodable)
    assert set(loaded.undecodable) == {(shard, k) for k in plan.held_out[shard] if k in UNDECODABLE}
    nothing = plan_samples(shards, sidecars, "train", "eval", 0)
    assert nothing.held_out == {} and held_out_set(nothing.held_out, sidecars, None).samples_read == 0


def test_an_eval_split_in_the_data_is_what_is_held_out(tmp_path):
    shards, sidecars = write_dataset(tmp_path, eval_shard=4)
    plan = plan_samples(shards, sidecars, "train", "eval", 1024)
    (shard,) = plan.held_out
    assert shard.endswith("00004.tar") and len(plan.held_out[shard]) == PER_SHARD
    assert plan.training_counts[shard] == 0  # eval-split samples never train, held out or not


def test_undecodable_images_give_their_place_to_spares_and_a_resume_stays_exact(dataset):
    shards, sidecars = dataset
    position = DataPosition()
    stream = training_batches(shards, sidecars, _settings(), 0, 1, position)
    batches = [next(stream) for _ in range(40)]  # 115 training samples: 14 batches an epoch, ~3 epochs
    for pixels, features in batches:
        assert pixels.shape == (8, 3, 16, 16)  # every batch full
        assert str(pixels.dtype) == "torch.uint8"  # a quarter of float32: the step normalises on its device
        ids = features[:, 0].int().tolist()
        assert len(set(ids)) == 8  # a spare comes from the next batch, never from its own
        assert not {f"{i // PER_SHARD:05d}{i % PER_SHARD:04d}" for i in ids} & (UNDECODABLE | NO_CAPTION)
    assert {key for _, key in position.undecodable} == UNDECODABLE
    assert {shard for shard, _ in position.undecodable} == {shards[2], shards[4]}

    # resumed from a checkpoint's position (after batch 20): the same next batches, the same record
    checkpoint = DataPosition()
    first = training_batches(shards, sidecars, _settings(), 0, 1, checkpoint)
    for _ in range(20):
        next(first)
    resumed_at = DataPosition(**dataclasses.asdict(checkpoint))
    resumed = training_batches(shards, sidecars, _settings(), 0, 1, resumed_at)
    for pixels, features in batches[20:]:
        got_pixels, got_features = next(resumed)
        assert np.array_equal(got_pixels, pixels) and np.array_equal(got_features, features)
    assert resumed_at == position


def test_a_resume_seeks_to_its_position_instead_of_reading_the_epoch_again(dataset, monkeypatch):
    import json

    from pipelines.train_vision import data

    shards, sidecars = dataset
    read = []
    original = data.span_samples

    def counted(span, sidecars, settings):
        for sample in original(span, sidecars, settings):
            read.append(sample.key)
            yield sample

    monkeypatch.setattr(data, "span_samples", counted)
    checkpoint = DataPosition()
    first = training_batches(shards, sidecars, _settings(), 0, 1, checkpoint)
    batches = [next(first) for _ in range(13)]  # near the end of epoch 0: most of its samples read
    saved = json.loads(json.dumps(dataclasses.asdict(checkpoint)))  # what a checkpoint keeps
    following = [next(first) for _ in range(3)]

    def first_batch_reads(position: DataPosition) -> tuple[int, list]:
        read.clear()
        stream = training_batches(shards, sidecars, _settings(), 0, 1, position)
        got = [next(stream)]
        reads = len(read)  # before the first batch: what the seek cost
        return reads, got + [next(stream) for _ in range(2)]

    sought, got = first_batch_reads(DataPosition(**saved))
    for (pixels, features), (got_pixels, got_features) in zip(following, got):
        assert np.array_equal(got_pixels, pixels) and np.array_equal(got_features, features)
    through, _ = first_batch_reads(
        DataPosition(epoch=saved["epoch"], batches_in_epoch=saved["batches_in_epoch"])
    )
    assert through >= 14 * 8  # without the snapshot: the epoch's samples so far, read again
    # with it: the current shard and the older ones' samples still in the 16-sample buffer
    assert sought <= 3 * PER_SHARD and sought < through / 2, (sought, through)
    print(f"reads before the first batch: sought {sought}, read through {through}")
    assert len(batches) == 13
