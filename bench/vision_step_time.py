"""train_vision step time, side by side in one run:
  1. precomputed LLM features (what the pipeline does) vs the LLM encoding the captions online each step
     (the method's efficiency claim: the LLM never runs inside vision training);
  2. batches from the shard + sidecar loader (decode, crop, join) vs the same batches from memory
     (is the loader the bottleneck?).

    python -m bench.vision_step_time [--steps 30] [--batch-size 32] [--images 512]

Tiny models built here from configs (CLIP ViT 64 px, 2-layer Llama encoder), one process, CPU. With the
paper's 8B LLM the online-encoding cost grows by orders of magnitude; the tiny ratio is a lower bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import tarfile
import tempfile
import time
from pathlib import Path

from bench.result import default_json, machine, write_result

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_inputs(work: Path, num_images: int, per_shard: int):
    from demo import basic_scenes as scenes
    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import TextEncoderConfig
    from models.text_encoder_io import save_text_encoder
    from models.tiny_factory import build_tiny_llm, build_tiny_vision_tower, train_scene_tokenizer
    from models.tiny_specs import TinyLlmSpec, TinyVisionSpec
    from ops.config_schema import build_config
    from pipelines.embed.config import EmbedConfig
    from pipelines.embed.embedder import ShardEmbedder

    tokenizer = train_scene_tokenizer(scenes.vocabulary_corpus(), 1024)
    tokenizer.padding_side = "right"
    encoder = LLMTextEncoder(
        build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0).model, TextEncoderConfig(max_length=160)
    )
    save_text_encoder(encoder, tokenizer, work / "encoder")
    tower, processor = build_tiny_vision_tower(TinyVisionSpec(), seed=0)
    tower.save_pretrained(work / "vision")
    processor.save_pretrained(work / "vision")
    shards = work / "shards"
    shards.mkdir()
    captions = {}
    for start in range(0, num_images, per_shard):
        with tarfile.open(shards / f"{start // per_shard:05d}.tar", "w") as tar:
            for index in range(start, min(start + per_shard, num_images)):
                rng = random.Random(index)
                scene = scenes.sample_scene(rng, f"{index:06d}", max_objects=4)
                image = io.BytesIO()
                scenes.render_scene(scene, 64).save(image, format="JPEG")
                short, dense = scenes.short_caption(scene, rng), scenes.dense_caption(scene)
                captions[f"{index:06d}"] = (short, dense)
                members = {
                    "jpg": image.getvalue(),
                    "txt": short.encode(),
                    "json": json.dumps({"dense_caption": dense}).encode(),
                }
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{index:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    embedder = ShardEmbedder(
        str(work / "encoder"), build_config(EmbedConfig, {}, "embed"), str(work / "embed"), str(shards), None
    )
    for tar_path in sorted(shards.glob("*.tar")):
        embedder.embed_shard(str(tar_path))
    return shards, work / "embed", work / "vision", work / "encoder", captions


def timed_steps(model, batches, steps: int, step_fn) -> float:
    """Seconds per step over `steps` steps after one warm-up step."""
    from pipelines.train_vision.loop import VisionLoopSettings, build_optimizer

    optimizer, _ = build_optimizer(model, VisionLoopSettings(1e-3, 0.0, 0, steps + 1, 1.0))
    iterator = iter(batches)
    began = None
    for index in range(steps + 1):
        if index == 1:
            began = time.perf_counter()
        loss = step_fn(next(iterator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--json", default=default_json("vision_step_time"))
    args = parser.parse_args()

    import itertools

    import torch

    from models.text_encoder_io import load_text_encoder
    from ops.image_transforms import normalize_pixels
    from ops.webdataset_io import shard_id_of
    from pipelines.train_vision.config import TrainVisionConfig
    from pipelines.train_vision.data import training_batches
    from pipelines.train_vision.loop import step_loss
    from pipelines.train_vision.model import build_model
    from pipelines.train_vision.records import DataPosition, LoaderSettings

    config = TrainVisionConfig(adapter_width=128, adapter_depth=2, projection_dim=64)
    with tempfile.TemporaryDirectory(prefix="bench-vision-") as tmp:
        shards, embed, vision, encoder_dir, captions = build_inputs(Path(tmp), args.images, 128)
        tar_paths = sorted(str(p) for p in shards.glob("*.tar"))
        sidecars = {shard_id_of(p): str(embed / "sidecars" / f"{shard_id_of(p)}.parquet") for p in tar_paths}
        model, transform = build_model(config, str(vision), 128)
        loader = LoaderSettings(
            args.batch_size, 1.0, 256, 0, None, transform=transform
        )  # dense features only

        def loader_batches(settings=loader):
            return training_batches(tar_paths, sidecars, settings, 0, 1, DataPosition())

        def step(batch):  # the loader's uint8 pixels, normalised as the training step does
            return step_loss(model, normalize_pixels(batch[0], transform.mean, transform.std), batch[1])

        in_memory = list(itertools.islice(loader_batches(), args.steps + 1))
        loader_s = timed_steps(model, loader_batches(), args.steps, step)
        # Decode and augmentation in one process ahead of the step (train_vision.decode_processes: 1).
        ahead = dataclasses.replace(loader, decode_processes=1, prefetch_batches=4)
        stream = loader_batches(ahead)
        next(stream)  # the process's start (imports) is paid once per run: not a per-step cost
        ahead_s = timed_steps(model, stream, args.steps, step)
        stream.close()
        memory_s = timed_steps(model, iter(in_memory), args.steps, step)

        # Online: the frozen LLM encodes the same dense captions every step.
        encoder, tokenizer = load_text_encoder(encoder_dir)
        dense_texts = [captions[k][1] for k in sorted(captions)]
        per_epoch = len(dense_texts) // args.batch_size
        text_batches = [
            dense_texts[(i % per_epoch) * args.batch_size : (i % per_epoch + 1) * args.batch_size]
            for i in range(args.steps + 1)
        ]

        def online_step(pair):
            (pixels, _), texts = pair
            with torch.no_grad():
                features = encoder.encode(tokenizer, texts, batch_size=len(texts))
            return step((pixels, features))

        online_s = timed_steps(model, iter(list(zip(in_memory, text_batches))), args.steps, online_step)
    rows = [
        {"name": "precomputed features, in-memory batches", "step_s": memory_s},
        {"name": "LLM encodes captions online, in-memory", "step_s": online_s},
        {"name": "precomputed features, shard+sidecar loader", "step_s": loader_s},
        {"name": "precomputed features, loader, 1 decode process", "step_s": ahead_s},
    ]
    for row in rows:
        row["ratio_to_precomputed"] = round(row["step_s"] / memory_s, 3)
        row["images_per_s"] = round(args.batch_size / row["step_s"], 1)
        row["step_s"] = round(row["step_s"], 4)
    result = {
        "bench": "vision_step_time",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "machine": machine(),
        "rows": rows,
    }
    write_result(args.json, result)
    print(f"\nbatch {args.batch_size}, {args.steps} steps, tiny CLIP ViT + tiny Llama, {result['machine']}")
    print(f"{'run':<46}{'step_s':>9}{'img/s':>9}{'ratio':>8}")
    for row in rows:
        print(
            f"{row['name']:<46}{row['step_s']:>9.4f}{row['images_per_s']:>9.1f}{row['ratio_to_precomputed']:>8.3f}"
        )
    print("(ratio = step time over the precomputed, in-memory step's)")


if __name__ == "__main__":
    main()
