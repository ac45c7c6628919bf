"""The Ray Data LLM processor that captions images: decode in preprocess (a bad image becomes a placeholder
row that carries its error), vLLM through ray.data.llm, and the generated text in postprocess."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from ops.image_decode import ImageDecodeError, decode_rgb
from ops.model_files import is_remote
from pipelines.recaption.config import RecaptionConfig

PLACEHOLDER_SIDE_PX = 64  # what an undecodable image is replaced by, so its row still flows through


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
