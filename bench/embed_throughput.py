"""embed throughput: the stage (Ray Data model actor, sidecar writing) against the bare encoder forward
on the same captions and batch size, and padding waste with and without length bucketing; one run.

    python -m bench.embed_throughput [--shards 8] [--per-shard 512] [--batch-size 64]

A tiny Llama encoder (built here from configs) embeds each sample's original and dense caption of
synthetic scene shards. "bare" is LLMTextEncoder.forward over the same captions in the same
length-sorted batches, in this process: no Ray, no tar reading, no parquet. Target: stage/bare >= 0.9.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import tarfile
import tempfile
import time
from pathlib import Path

from bench.result import default_json, fit_start_and_per_item, machine, write_result

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_inputs(work: Path, num_shards: int, per_shard: int) -> tuple[Path, Path, list[str]]:
    from demo import basic_scenes as scenes
    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import TextEncoderConfig
    from models.text_encoder_io import save_text_encoder
    from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
    from models.tiny_specs import TinyLlmSpec

    tokenizer = train_scene_tokenizer(scenes.vocabulary_corpus(), 1024)
    tokenizer.padding_side = "right"
    encoder = LLMTextEncoder(
        build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0).model, TextEncoderConfig(max_length=160)
    )
    encoder_dir = work / "encoder"
    save_text_encoder(encoder, tokenizer, encoder_dir)
    shards = work / "shards"
    shards.mkdir()
    captions = []
    for shard in range(num_shards):
        with tarfile.open(shards / f"{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                index = shard * per_shard + i
                rng = random.Random(index)
                scene = scenes.sample_scene(rng, f"{index:06d}", max_objects=4)
                short, dense = scenes.short_caption(scene, rng), scenes.dense_caption(scene)
                captions += [short, dense]
                members = {
                    "jpg": b"\xff\xd8",
                    "txt": short.encode(),
                    "json": json.dumps({"dense_caption": dense}).encode(),
                }
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{index:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return encoder_dir, shards, captions


def run_stage(
    encoder_dir: Path, shards: Path, work: Path, batch_size: int, bucketing: bool, num_actors: int = 1
) -> dict:
    from ops.artifact_dir import ArtifactDir
    from ops.config_schema import build_config
    from ops.stage import StageContext
    from pipelines.embed.config import EmbedConfig
    from pipelines.embed.stage import embed_shards

    # The actors share every core, as the bare forward in this process uses them (Ray sets torch threads).
    settings = {
        "batch_size": batch_size,
        "length_bucketing": bucketing,
        "num_actors": num_actors,
        "num_cpus_per_actor": max(1, (os.cpu_count() or 1) // num_actors),
    }
    config = build_config(EmbedConfig, settings, "embed")
    artifact = ArtifactDir(str(work / f"stage-{bucketing}-{num_actors}"))
    began = time.perf_counter()
    outcome = embed_shards(config, str(shards), str(encoder_dir), StageContext(artifact, {}))
    wall = time.perf_counter() - began
    encode_s = sum(s["seconds"] for s in artifact.shard_stats())  # inside the actor: read, embed, write
    return {"wall_s": wall, "actor_s": encode_s, "padding_share": outcome.metrics["padding_share"]}


def run_bare(encoder_dir: Path, captions: list[str], per_shard: int, batch_size: int) -> dict:
    import torch

    from models.text_encoder import build_text_inputs
    from models.text_encoder_io import load_text_encoder
    from ops.length_buckets import length_sorted_batches

    encoder, tokenizer = load_text_encoder(encoder_dir)
    encoder.eval()
    began = time.perf_counter()
    shard_size = 2 * per_shard  # same batching as the stage: length-sorted within each shard
    with torch.inference_mode():
        for start in range(0, len(captions), shard_size):
            texts = captions[start : start + shard_size]
            lengths = [len(ids) for ids in tokenizer(texts, truncation=False).input_ids]
            for batch in length_sorted_batches(lengths, batch_size):
                inputs = build_text_inputs(tokenizer, [texts[i] for i in batch], encoder.config)
                encoder(**inputs)
    return {"wall_s": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=512, help="samples per shard (2 captions each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fit-shards", type=int, nargs="+", default=[2, 8, 32], help="shards per fit run")
    parser.add_argument("--json", default=default_json("embed_throughput"))
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        work = Path(tmp)
        encoder_dir, shards, captions = build_inputs(work, args.shards, args.per_shard)
        bare = run_bare(encoder_dir, captions, args.per_shard, args.batch_size)
        stage = run_stage(encoder_dir, shards, work, args.batch_size, bucketing=True)
        unsorted = run_stage(encoder_dir, shards, work, args.batch_size, bucketing=False)
        # The stage at several sizes: wall = start + n x per-caption splits its fixed cost from its
        # steady-state cost per caption, which is compared with the bare forward's.
        fit_captions, fit_walls = [], []
        for num_shards in args.fit_shards:
            fit_work = work / f"fit-{num_shards}"
            fit_work.mkdir()
            fit_dir, fit_shards, fit_texts = build_inputs(fit_work, num_shards, args.per_shard)
            fit_captions.append(len(fit_texts))
            fit_walls.append(
                run_stage(fit_dir, fit_shards, fit_work, args.batch_size, bucketing=True)["wall_s"]
            )
    ray.shutdown()
    start_s, per_caption_s = fit_start_and_per_item(fit_captions, fit_walls)
    fit = {
        "captions": fit_captions,
        "walls_s": [round(w, 2) for w in fit_walls],
        "start_s": round(start_s, 2),
        "captions_per_s": round(1 / max(per_caption_s, 1e-9), 1),
    }
    count = len(captions)
    rows = [
        {
            "name": "bare encoder forward (sorted)",
            "seconds": bare["wall_s"],
            "padding_share": stage["padding_share"],
        },
        {
            "name": "embed stage, actor time (sorted)",
            "seconds": stage["actor_s"],
            "padding_share": stage["padding_share"],
        },
        {
            "name": "embed stage, wall (sorted)",
            "seconds": stage["wall_s"],
            "padding_share": stage["padding_share"],
        },
        {
            "name": "embed stage, wall (unsorted)",
            "seconds": unsorted["wall_s"],
            "padding_share": unsorted["padding_share"],
        },
    ]
    for row in rows:
        row["captions_per_s"] = round(count / row["seconds"], 1)
        row["ratio_to_bare"] = round(row["captions_per_s"] / (count / bare["wall_s"]), 3)
        row["seconds"] = round(row["seconds"], 2)
        row["padding_share"] = round(row["padding_share"], 3)
    result = {
        "bench": "embed_throughput",
        "captions": count,
        "batch_size": args.batch_size,
        "fit": fit,
        "machine": machine(),
        "rows": rows,
    }
    write_result(args.json, result)
    print(f"\n{count} captions, batch {args.batch_size}, tiny Llama encoder, {result['machine']}")
    print(f"{'run':<36}{'seconds':>9}{'capt/s':>9}{'ratio':>7}{'padding':>9}")
    for row in rows:
        print(
            f"{row['name']:<36}{row['seconds']:>9.2f}{row['captions_per_s']:>9.1f}"
            f"{row['ratio_to_bare']:>7.3f}{row['padding_share']:>9.3f}"
        )
    print("(ratio = captions/s over the bare forward's; padding = padded share of the batch tokens)")
    steady_ratio = fit["captions_per_s"] / rows[0]["captions_per_s"]
    print(
        f"fit over {fit['captions']} captions, walls {fit['walls_s']} s: start {fit['start_s']} s, "
        f"{fit['captions_per_s']} captions/s steady ({steady_ratio:.3f} of bare)"
    )


if __name__ == "__main__":
    main()
