"""finetune_text throughput: caption pairs/s of the same loop without Ray, on Ray Train with 1 worker,
and on Ray Train with 2 workers (CPU), side by side in one run.

    python -m bench.finetune_throughput [--steps 40] [--batch-size 16] [--pairs 1024]

Same tiny Llama (built here from configs), same pairs, same LoRA. "loop" columns time the training
steps alone (Ray Train: on rank 0's clock, checkpoints included); "wall" adds worker start-up and model
load. The 2-worker run sees a global batch twice as large (batch-size per worker), so pairs/s compares
work done, and the ratio to the no-Ray loop is Ray Train's cost or gain on this machine.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from bench.result import default_json, machine, write_result

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_inputs(work: Path, num_pairs: int):
    import pyarrow as pa

    from demo import basic_scenes as scenes
    from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
    from models.tiny_specs import TinyLlmSpec

    tokenizer = train_scene_tokenizer(scenes.vocabulary_corpus(), 1024)
    model = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0)
    model_dir = work / "llm"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = []
    for i in range(num_pairs):
        rng = random.Random(i)
        scene = scenes.sample_scene(rng, f"{i:06d}", max_objects=4)
        rows.append(
            {
                "key": f"{i:06d}",
                "kind": "original_dense",
                "caption_1": scenes.short_caption(scene, rng),
                "caption_2": scenes.dense_caption(scene),
            }
        )
    return model_dir, pa.Table.from_pylist(rows)


def bench_config(steps: int, batch_size: int, num_workers: int):
    from ops.config_schema import build_config
    from pipelines.finetune_text.config import FinetuneTextConfig

    settings = {
        "max_steps": steps,
        "batch_size_per_worker": batch_size,
        "num_workers": num_workers,
        "checkpoint_every_steps": steps,  # one checkpoint at the end, as a short real run would
        "encoder": {"max_length": 160},
        "learning_rate": 0.002,
        "warmup_steps": 5,
    }
    return build_config(FinetuneTextConfig, settings, "finetune_text")


def run_without_ray(model_dir: Path, pairs, steps: int, batch_size: int) -> dict:
    import torch

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_io import apply_lora, load_backbone
    from pipelines.finetune_text.batches import pair_batches
    from pipelines.finetune_text.loop import LoopSettings, build_optimizer, train_steps

    config = bench_config(steps, batch_size, 1)
    began = time.perf_counter()
    backbone, tokenizer = load_backbone(str(model_dir), False)
    encoder = LLMTextEncoder(apply_lora(backbone, config.lora), config.encoder)
    loop = LoopSettings(
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        weight_decay=0.0,
        warmup_steps=config.warmup_steps,
        max_steps=steps,
        max_grad_norm=1.0,
        seed=0,
    )
    optimizer, scheduler = build_optimizer(encoder, loop)
    batches = pair_batches(pairs.select(["caption_1", "caption_2"]), batch_size, rank=0, world=1, seed=0)
    loop_began = time.perf_counter()
    train_steps(
        encoder, tokenizer, batches, loop, optimizer, scheduler, 0, lambda s, m: None, torch.device("cpu")
    )
    done = time.perf_counter()
    return {"wall_s": done - began, "loop_s": done - loop_began, "pairs": steps * batch_size}


def run_on_ray_train(
    model_dir: Path, pairs, steps: int, batch_size: int, num_workers: int, work: Path
) -> dict:
    from ops.artifact_dir import ArtifactDir
    from ops.stage import StageContext
    from pipelines.finetune_text.worker import run_training

    config = bench_config(steps, batch_size, num_workers)
    artifact = ArtifactDir(str(work / f"ray-{num_workers}"))
    artifact.write_parquet_atomic("pairs/train.parquet", pairs)
    # The stage scores CRA on held-out pairs at the end; a few of the pairs stand in for them here.
    held_out = pairs.slice(0, 16).select(["caption_1", "caption_2"]).rename_columns(["original", "dense"])
    artifact.write_parquet_atomic("pairs/eval.parquet", held_out)
    metrics = run_training(
        config,
        str(model_dir),
        artifact.child_uri("pairs/train.parquet"),
        artifact.child_uri("pairs/eval.parquet"),
        StageContext(artifact, {}),
    )
    total = steps * batch_size * num_workers
    return {"wall_s": metrics["train_s"], "loop_s": total / metrics["loop_pairs_per_s"], "pairs": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per worker per step")
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--json", default=default_json("finetune_throughput"))
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=max(os.cpu_count() or 2, 2), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = Path(tmp)
        model_dir, pairs = build_inputs(work, args.pairs)
        runs = {
            "no Ray (one process)": run_without_ray(model_dir, pairs, args.steps, args.batch_size),
            "Ray Train, 1 worker": run_on_ray_train(model_dir, pairs, args.steps, args.batch_size, 1, work),
            "Ray Train, 2 workers": run_on_ray_train(model_dir, pairs, args.steps, args.batch_size, 2, work),
        }
    ray.shutdown()
    base_rate = None
    rows = []
    for name, r in runs.items():
        loop_rate = r["pairs"] / r["loop_s"]
        base_rate = base_rate or loop_rate
        rows.append(
            {
                "name": name,
                "pairs": r["pairs"],
                "wall_s": round(r["wall_s"], 2),
                "loop_s": round(r["loop_s"], 2),
                "wall_pairs_per_s": round(r["pairs"] / r["wall_s"], 1),
                "loop_pairs_per_s": round(loop_rate, 1),
                "loop_rate_over_no_ray": round(loop_rate / base_rate, 3),
            }
        )
    result = {
        "bench": "finetune_throughput",
        "steps": args.steps,
        "batch_size_per_worker": args.batch_size,
        "machine": machine(),
        "rows": rows,
    }
    write_result(args.json, result)
    print(
        f"\n{args.steps} steps x {args.batch_size} pairs per worker, tiny Llama + LoRA, {result['machine']}"
    )
    print(f"{'run':<24}{'pairs':>7}{'wall_s':>8}{'loop_s':>8}{'wall p/s':>10}{'loop p/s':>10}{'ratio':>7}")
    for row in rows:
        print(
            f"{row['name']:<24}{row['pairs']:>7}{row['wall_s']:>8.1f}{row['loop_s']:>8.1f}"
            f"{row['wall_pairs_per_s']:>10.1f}{row['loop_pairs_per_s']:>10.1f}{row['loop_rate_over_no_ray']:>7.3f}"
        )
    print("(ratio = loop pairs/s over the no-Ray loop's)")


if __name__ == "__main__":
    main()
