"""Demo inputs stage: synthetic scenes written as JPEG files plus a caption table per shard.

Output layout (under the stage's artifact directory):
  images/{split}/{key}.jpg               the images the download stage serves over loopback HTTP
  tables/{split}-{shard:05d}.parquet     key, split, image_path, caption, dense_caption,
                                         num_objects, background, paraphrase, caption_l2,
                                         dense_caption_l2, dense_caption_syn
  _shards/{split}-{shard:05d}.json       completion marker with the shard's counts
"""

from __future__ import annotations

import dataclasses
import io
import random
import time

import pyarrow as pa
import ray

from demo import basic_scenes as scenes
from demo import rich_scenes, second_language
from demo.lm_corpus import english_description
from demo.ray_progress import wait_with_progress
from demo.scenes.table import SPLITS, TABLE_SCHEMA
from demo.synonyms import synonym_caption
from ops.artifact_dir import ArtifactDir
from ops.config_schema import check
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec

DETAILS = ("basic", "rich")


@dataclasses.dataclass(frozen=True)
class ScenesConfig:
    num_train: int = 512  # scenes in the train split
    num_eval: int = 128  # held-out scenes, never seen in training
    samples_per_shard: int = 128  # scenes per shard (one Ray task and one completion marker each)
    image_size_px: int = 96  # side of the square images, in pixels
    max_objects: int = 4  # basic scenes: objects per scene are drawn from 1..max_objects
    # basic: a 3x3 grid, short dense captions (the demo). rich: a 3x3 grid of 3-7 objects with fill
    # patterns, dense captions of ~120-290 tokens, second-language and synonym captions (demo/rich_scenes.py).
    detail: str = "basic"
    family_size: int = 1  # rich scenes: siblings share their top half, so only the caption's tail differs
    jpeg_quality: int = 90  # PIL JPEG quality, 1..95
    seed: int = 0

    def __post_init__(self):
        check(self.num_train > 0, "num_train", "a positive number of scenes", self.num_train)
        check(self.num_eval >= 0, "num_eval", "zero or more scenes", self.num_eval)
        check(self.samples_per_shard > 0, "samples_per_shard", "a positive count", self.samples_per_shard)
        check(16 <= self.image_size_px <= 1024, "image_size_px", "16..1024 pixels", self.image_size_px)
        check(1 <= self.max_objects <= 5, "max_objects", "1..5", self.max_objects)
        check(self.detail in DETAILS, "detail", f"one of {DETAILS}", self.detail)
        check(self.family_size > 0, "family_size", "a positive count", self.family_size)
        check(
            self.detail == "rich" or self.family_size == 1,
            "family_size",
            "1 for basic scenes (families are a rich-scene feature)",
            self.family_size,
        )
        check(1 <= self.jpeg_quality <= 95, "jpeg_quality", "1..95", self.jpeg_quality)

    def num_samples(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_eval


@dataclasses.dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    start: int  # first scene index of the split in this shard
    stop: int  # one past the last

    @property
    def shard_id(self) -> str:
        return f"{self.split}-{self.index:05d}"


def plan_shards(config: ScenesConfig) -> list[ShardTask]:
    tasks = []
    for split in SPLITS:
        total = config.num_samples(split)
        for index, start in enumerate(range(0, total, config.samples_per_shard)):
            tasks.append(ShardTask(split, index, start, min(start + config.samples_per_shard, total)))
    return tasks


def write_shard(artifact: ArtifactDir, config: ScenesConfig, task: ShardTask) -> dict[str, int]:
    """Render and write one shard's images and table, then its marker; idempotent if rerun."""
    rows = []
    for index in range(task.start, task.stop):
        key = scenes.scene_key(task.split, index)
        row, image = (_rich_row if config.detail == "rich" else _basic_row)(config, task.split, index, key)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=config.jpeg_quality)
        image_path = f"images/{task.split}/{key}.jpg"
        with artifact.open(image_path, "wb") as handle:
            handle.write(buffer.getvalue())
        rows.append({"key": key, "split": task.split, "image_path": image_path, **row})
    table = pa.Table.from_pylist(rows, schema=TABLE_SCHEMA)
    artifact.write_parquet_atomic(f"tables/{task.shard_id}.parquet", table)
    stats = {"num_in": task.stop - task.start, "num_out": len(rows)}
    artifact.mark_shard_done(task.shard_id, stats)
    return stats


def _basic_row(config: ScenesConfig, split: str, index: int, key: str):
    rng = random.Random(scenes.scene_seed(config.seed, split, index))
    scene = scenes.sample_scene(rng, key, config.max_objects)
    image = scenes.render_scene(scene, config.image_size_px)
    row = {
        "caption": scenes.short_caption(scene, rng),
        "dense_caption": scenes.dense_caption(scene),
        "num_objects": len(scene.objects),
        "background": scene.background,
        "family": index,
        "paraphrase": None,
        "caption_l2": None,
        "dense_caption_l2": None,
        "dense_caption_syn": None,
    }
    return row, image


def _rich_row(config: ScenesConfig, split: str, index: int, key: str):
    scene = rich_scenes.sample_rich_scene(config.seed, split, index, config.family_size, key)
    template = rich_scenes.short_template(config.seed, split, index)
    dense = rich_scenes.rich_dense_caption(scene)
    row = {
        "caption": rich_scenes.rich_short_caption(scene, template),
        "dense_caption": dense,
        "num_objects": len(scene.objects),
        "background": scene.background,
        "family": index // config.family_size,
        "paraphrase": english_description(
            scene, random.Random(rich_scenes.rich_scene_seed(config.seed, split, index, "paraphrase"))
        ),
        "caption_l2": second_language.l2_short_caption(scene, template),
        "dense_caption_l2": second_language.l2_dense_caption(scene),
        "dense_caption_syn": synonym_caption(dense),
    }
    return row, rich_scenes.render_rich_scene(scene, config.image_size_px)


def run_scenes(config: ScenesConfig, ctx: StageContext) -> StageOutcome:
    started = time.perf_counter()
    tasks = plan_shards(config)
    pending = [t for t in tasks if not ctx.artifact.shard_done(t.shard_id)]
    if len(pending) < len(tasks):
        print(f"[scenes] resuming: {len(tasks) - len(pending)} of {len(tasks)} shards already complete")
    remote_write = ray.remote(num_cpus=1)(write_shard)
    refs = [remote_write.remote(ctx.artifact, config, task) for task in pending]
    wait_with_progress(refs, desc="scenes shards")
    stats = ctx.artifact.shard_stats()
    num_in = sum(s["num_in"] for s in stats)
    num_out = sum(s["num_out"] for s in stats)
    expected = config.num_train + config.num_eval
    if len(stats) != len(tasks) or num_in != expected:
        raise RuntimeError(
            f"scenes: {len(stats)} of {len(tasks)} shard markers, {num_in} of {expected} scenes"
        )
    elapsed = time.perf_counter() - started
    metrics = {
        "num_shards": float(len(tasks)),
        "num_shards_resumed": float(len(tasks) - len(pending)),
        "images_per_s": (sum(t.stop - t.start for t in pending) / elapsed) if pending else 0.0,
    }
    return StageOutcome(counts=StageCounts(num_in=num_in, num_out=num_out), metrics=metrics)


STAGE = StageSpec(
    name="scenes",
    code_version="3",  # 2: rich scenes and the second-language columns; 3: the synonym caption
    config_cls=ScenesConfig,
    inputs=(),
    run=run_scenes,
    description="synthetic demo scenes: JPEGs, short and dense captions, train and eval splits",
    resumable=True,
)
