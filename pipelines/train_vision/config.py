"""train_vision's settings: what the recipe's `train_vision:` section holds, checked on load."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from ops.config_schema import check, check_model_reference
from ops.hashing import IN_KEY_WHEN_SET, NOT_IN_KEY


@dataclasses.dataclass(frozen=True)
class TrainVisionConfig:
    # HF id or local path of a CLIPVisionModel / SiglipVisionModel, or "timm:<name>" for a timm tower
    # (e.g. timm:eva02_large_patch14_clip_336.merged2b; needs the GPU profile); "" = the demo's tiny tower
    vision_model: str = ""
    adapter_width: int = 1024  # LLM2CLIP's adapter: residual MLP blocks on the LLM features
    adapter_depth: int = 4
    adapter_dropout: float = 0.0
    # The official adapter's shape is expansion 2, no input projection (its blocks run at the LLM's width,
    # so adapter_width must equal it) and an output bias; these defaults are this project's first shape.
    adapter_expansion: int = dataclasses.field(default=4, metadata=IN_KEY_WHEN_SET)  # block hidden / width
    adapter_input_projection: bool = dataclasses.field(default=True, metadata=IN_KEY_WHEN_SET)
    adapter_output_bias: bool = dataclasses.field(default=False, metadata=IN_KEY_WHEN_SET)
    projection_dim: int = 1280  # the shared image-text space
    dense_ratio: float = 0.5  # share of samples trained on the dense caption (LLM2CLIP: 50/50)
    train_split_value: str = "train"  # samples whose `split` differs are left out of training
    # Held out from training and scored during and after it: this many samples of the eval split where
    # the data has one (its `split` column), else of the training data, chosen by hash of shard names and
    # keys so that they sit in as few shards as can hold them (only those are read). 0: none, no reading.
    num_eval_samples: int = 1024
    eval_split_value: str = "eval"
    eval_batch_size: int = dataclasses.field(default=256, metadata=NOT_IN_KEY)  # images per eval forward
    eval_every_steps: int = dataclasses.field(default=0, metadata=NOT_IN_KEY)  # 0 = only at the end
    batch_size_per_worker: int = 64  # images; the loss sees num_workers x this many pairs
    max_steps: int = 1000
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    layer_decay: float = 1.0  # layer-wise lr decay over the vision tower; 1.0 = off
    # ln(1 / temperature) at the start when the tower's checkpoint has none (a full CLIP checkpoint's own
    # wins: OpenAI CLIP's is ln 100); 2.6592 = ln(1 / 0.07) is CLIP's from-scratch value. Clamped to
    # [0, ln 100] after every step.
    logit_scale_init: float = 2.6592
    train_crop_scale: tuple[float, float] = (0.9, 1.0)  # random-resized-crop area range
    # Samples shuffled together: each worker's spans are read in blocks of this many, each block drawn in
    # a seeded order (a resume re-reads one block, so keep it near a shard's size)
    shuffle_buffer: int = 1000  # samples
    # Processes per worker that decode and augment images ahead of the step (0: the training process does
    # it between steps). Not part of the key: every batch is a function of its seed, wherever it is made.
    decode_processes: int = dataclasses.field(default=0, metadata=NOT_IN_KEY)
    # GPU options; they change numerics in the last bits, so they are part of the key once set.
    fused_adamw: bool = dataclasses.field(default=False, metadata=IN_KEY_WHEN_SET)  # one fused AdamW kernel
    compile: bool = dataclasses.field(default=False, metadata=IN_KEY_WHEN_SET)  # torch.compile the model
    # bf16 weights, with the optimizer on fp32 master copies: half the weight memory and traffic; the
    # export holds the fp32 masters. Usually with use_gpu (bf16 autocast then changes nothing more).
    bf16_weights: bool = dataclasses.field(default=False, metadata=IN_KEY_WHEN_SET)
    prefetch_batches: int = dataclasses.field(default=2, metadata=NOT_IN_KEY)  # per decode process
    num_workers: int = 2  # in the key: the loss's global batch is num_workers x batch_size_per_worker
    use_gpu: bool = False
    bf16: bool = True  # autocast on GPU
    gradient_checkpointing: bool = False
    # Not in the key (they change no weight): a crashed run rerun with more max_failures resumes.
    checkpoint_every_steps: int = dataclasses.field(default=200, metadata=NOT_IN_KEY)
    max_failures: int = dataclasses.field(default=1, metadata=NOT_IN_KEY)
    # Where Ray places the workers (Ray Train's ScalingConfig.placement_strategy): PACK fills a node first,
    # SPREAD puts them on different nodes. Not part of the key: it changes no result.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = dataclasses.field(
        default="PACK", metadata=NOT_IN_KEY
    )
    seed: int = 0

    def __post_init__(self):
        check_model_reference(self.vision_model, "vision_model")
        check(self.decode_processes >= 0, "decode_processes", "zero or more", self.decode_processes)
        check(self.prefetch_batches >= 1, "prefetch_batches", "one or more", self.prefetch_batches)
        for name in (
            "adapter_width",
            "adapter_depth",
            "adapter_expansion",
            "projection_dim",
            "batch_size_per_worker",
            "max_steps",
            "num_workers",
            "checkpoint_every_steps",
            "shuffle_buffer",
            "eval_batch_size",
        ):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(0 <= self.dense_ratio <= 1, "dense_ratio", "in [0, 1]", self.dense_ratio)
        check(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)
        check(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        check(self.num_eval_samples >= 0, "num_eval_samples", "zero (none) or more", self.num_eval_samples)
        check(
            self.eval_every_steps >= 0,
            "eval_every_steps",
            "zero (off) or a step count",
            self.eval_every_steps,
        )
        low, high = self.train_crop_scale
        check(0 < low <= high <= 1, "train_crop_scale", "0 < low <= high <= 1", self.train_crop_scale)
        check(
            0 <= self.logit_scale_init <= math.log(100),
            "logit_scale_init",
            "in [0, ln 100 = 4.60517]",
            self.logit_scale_init,
        )
        check(self.max_failures >= 0, "max_failures", "zero or more", self.max_failures)


def train_vision_inputs(config: TrainVisionConfig) -> tuple[str, ...]:
    return ("download", "embed") if config.vision_model else ("download", "embed", "tiny_models")
