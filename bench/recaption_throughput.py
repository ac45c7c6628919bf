"""Recaption throughput: the stage (ray.data.llm + vLLM) vs. plain vllm.LLM.chat vs. HF generate.

    python -m bench.recaption_throughput [--num-images 512] [--sizes 128 512 2048] [--max-tokens 32]

Same tiny captioner (built here from configs), same images, same sampling, one run. Each row reports
wall time with model load and the generation part alone where it can be separated; tokens/s is counted
from the tokens each method actually generated. The stage's engine start happens inside its Ray actor,
so its generation-only time is its wall time minus plain vLLM's measured load time (an estimate).

The stage and plain vLLM also run at each of --sizes images: a least-squares fit of wall = start + n x
per-image splits each one's fixed cost (engine start, Ray start-up, scheduling) from its steady-state cost
per image, and the per-image rates are compared (the issue's target: the stage at 0.9 of plain vLLM).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import tarfile
import tempfile
import time
from pathlib import Path

from bench.result import default_json, fit_start_and_per_item, machine, write_result

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_inputs(work: Path, num_images: int) -> tuple[Path, Path, list]:
    from PIL import Image

    from demo import basic_scenes as scenes
    from models.tiny_factory import build_tiny_captioner, train_scene_tokenizer
    from models.tiny_specs import TinyLlmSpec, TinyVisionSpec

    tokenizer = train_scene_tokenizer(scenes.vocabulary_corpus(), 1024)
    model, processor = build_tiny_captioner(tokenizer, TinyLlmSpec(), TinyVisionSpec(), seed=0)
    model_dir = work / "captioner"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    shards = work / "shards"
    shards.mkdir()
    images = []
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for i in range(num_images):
            scene = scenes.sample_scene(random.Random(i), f"{i:06d}", max_objects=4)
            buffer = io.BytesIO()
            scenes.render_scene(scene, 64).save(buffer, format="JPEG")
            info = tarfile.TarInfo(f"{i:06d}.jpg")
            info.size = len(buffer.getvalue())
            tar.addfile(info, io.BytesIO(buffer.getvalue()))
            images.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return model_dir, shards, images


def run_stage(model_dir: Path, shards: Path, work: Path, max_tokens: int, batch_size: int) -> dict:
    import ray

    from ops.artifact_dir import ArtifactDir
    from ops.stage import StageContext
    from pipelines.recaption.config import RecaptionConfig
    from pipelines.recaption.stage import recaption_shards

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    config = RecaptionConfig(
        model=str(model_dir),
        max_tokens=max_tokens,
        temperature=1.0,
        top_p=1.0,
        repetition_penalty=1.0,
        batch_size=batch_size,
        max_model_len=256,
        num_sample_previews=0,
    )
    started = time.perf_counter()
    recaption_shards(config, str(shards), str(model_dir), StageContext(ArtifactDir(str(work / "out")), {}))
    wall = time.perf_counter() - started
    ray.shutdown()
    # The shard markers count the tokens of every row, rejected ones included.
    tokens = sum(s["generated_tokens"] for s in ArtifactDir(str(work / "out")).shard_stats())
    return {"wall_s": wall, "tokens": tokens}


def run_vllm(model_dir: Path, images: list, max_tokens: int) -> dict:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(model=str(model_dir), gpu_memory_utilization=0.2, max_model_len=256, enforce_eager=True)
    loaded = time.perf_counter()
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, top_p=1.0)
    conversations = [
        [{"role": "user", "content": [{"type": "image_pil", "image_pil": im}, {"type": "text", "text": "x"}]}]
        for im in images
    ]
    from models.captioner_prompts import prompt_text

    for conversation in conversations:
        conversation[0]["content"][1]["text"] = prompt_text("detailed")
    outputs = llm.chat(conversations, params, use_tqdm=False)
    done = time.perf_counter()
    del llm
    return {
        "wall_s": done - started,
        "load_s": loaded - started,
        "generate_s": done - loaded,
        "tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
    }


def run_hf(model_dir: Path, images: list, max_tokens: int, batch_size: int) -> dict:
    import torch
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    from models.captioner_prompts import render_prompt

    started = time.perf_counter()
    processor = AutoProcessor.from_pretrained(model_dir)
    model = Idefics3ForConditionalGeneration.from_pretrained(model_dir).eval()
    prompt = render_prompt(processor, "detailed")
    loaded = time.perf_counter()
    tokens = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            inputs = processor(text=[prompt] * len(batch), images=[[im] for im in batch], return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=True, top_p=1.0)
            new = out[:, inputs["input_ids"].shape[1] :]
            tokens += int((new != processor.tokenizer.pad_token_id).sum())
    done = time.perf_counter()
    return {
        "wall_s": done - started,
        "load_s": loaded - started,
        "generate_s": done - loaded,
        "tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048], help="images per fit run")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=default_json("recaption_throughput"))
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"stage": [], "bare": []}
    for size in args.sizes:  # the fit's runs, each on fresh inputs of its size
        with tempfile.TemporaryDirectory(prefix="bench-recaption-") as tmp:
            work = Path(tmp)
            model_dir, shards, images = build_inputs(work, size)
            walls["stage"].append(
                run_stage(model_dir, shards, work, args.max_tokens, args.batch_size)["wall_s"]
            )
            walls["bare"].append(run_vllm(model_dir, images, args.max_tokens)["wall_s"])
    with tempfile.TemporaryDirectory(prefix="bench-recaption-") as tmp:
        work = Path(tmp)
        model_dir, shards, images = build_inputs(work, args.num_images)
        stage = run_stage(model_dir, shards, work, args.max_tokens, args.batch_size)
        bare = run_vllm(model_dir, images, args.max_tokens)
        hf = run_hf(model_dir, images, args.max_tokens, args.batch_size)
    stage["generate_s"] = max(stage["wall_s"] - bare["load_s"], 1e-9)
    rows = []
    for name, r in (
        ("recaption stage (Ray Data + vLLM)", stage),
        ("plain vllm.LLM.chat", bare),
        ("HF generate", hf),
    ):
        rows.append(
            {
                "name": name,
                "wall_s": round(r["wall_s"], 2),
                "generate_s": round(r["generate_s"], 2),
                "images_per_s": round(args.num_images / r["generate_s"], 2),
                "tokens_per_s": round(r["tokens"] / r["generate_s"], 1),
            }
        )
    bare_rate = rows[1]["tokens_per_s"]
    for row in rows:
        row["tokens_per_s_over_bare_vllm"] = round(row["tokens_per_s"] / bare_rate, 3)
    fits = {name: fit_start_and_per_item(args.sizes, w) for name, w in walls.items()}
    fit = {
        "sizes": args.sizes,
        "walls_s": {name: [round(w, 2) for w in ws] for name, ws in walls.items()},
        "start_s": {name: round(f[0], 2) for name, f in fits.items()},
        "images_per_s": {name: round(1 / max(f[1], 1e-9), 2) for name, f in fits.items()},
    }
    fit["per_image_ratio"] = round(fit["images_per_s"]["stage"] / fit["images_per_s"]["bare"], 3)
    result = {
        "bench": "recaption_throughput",
        "fit": fit,
        "num_images": args.num_images,
        "max_tokens": args.max_tokens,
        "machine": machine(),
        "rows": rows,
    }
    write_result(args.json, result)
    print(f"\n{args.num_images} images, {args.max_tokens} tokens max, tiny Idefics3, {result['machine']}")
    print(f"{'run':<36}{'wall_s':>8}{'gen_s':>8}{'img/s':>8}{'tok/s':>9}{'ratio':>7}")
    for row in rows:
        print(
            f"{row['name']:<36}{row['wall_s']:>8.1f}{row['generate_s']:>8.1f}{row['images_per_s']:>8.1f}"
            f"{row['tokens_per_s']:>9.1f}{row['tokens_per_s_over_bare_vllm']:>7.3f}"
        )
    print(
        "(stage gen_s = its wall minus plain vLLM's load time: an estimate; ratio = tokens/s over plain vLLM)"
    )
    print(f"\nfit of wall = start + n x per-image over {args.sizes} images:")
    for name in ("stage", "bare"):
        print(
            f"  {name:<6} walls {fit['walls_s'][name]} s -> start {fit['start_s'][name]} s, "
            f"{fit['images_per_s'][name]} img/s"
        )
    print(f"  per-image rate, stage over plain vLLM: {fit['per_image_ratio']}")


if __name__ == "__main__":
    main()
