"""An LLM as a caption encoder (LLM2Vec / LLM2CLIP): bidirectional attention, mean pooling, L2 norm.

Pooling averages the hidden states of the caption's own tokens: padding, BOS and the optional
instruction prefix are excluded, so the same caption gets the same embedding in any batch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ops.config_schema import check


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    pooling: Literal["mean"] = "mean"
    bidirectional: bool = True  # remove the causal mask, as LLM2Vec does before contrastive training
    max_length: int = 512  # tokens per caption, instruction included; longer captions are truncated
    instruction: str = ""  # prepended to every caption and excluded from pooling, e.g. "Caption: "

    def __post_init__(self):
        check(self.max_length > 1, "max_length", "more than one token", self.max_length)


def build_text_inputs(tokenizer, texts: list[str], config: TextEncoderConfig) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and pool_mask (1 on the caption's own tokens), right-padded."""
    full = [config.instruction + text for text in texts]
    batch = tokenizer(full, padding=True, truncation=True, max_length=config.max_length, return_tensors="pt")
    if tokenizer.padding_side != "right":
        raise ValueError(
            "build_text_inputs expects a right-padding tokenizer (tokenizer.padding_side='right')"
        )
    # Tokens before the caption: BOS and the instruction. BPE may merge across the boundary, so an
    # instruction should end with a separator (": " or a newline).
    prefix = len(tokenizer(config.instruction).input_ids) if config.instruction else 0
    if not config.instruction and batch["input_ids"].shape[1] and tokenizer.bos_token_id is not None:
        prefix = int((batch["input_ids"][:, 0] == tokenizer.bos_token_id).all())
    pool_mask = batch["attention_mask"].clone()
    pool_mask[:, :prefix] = 0
    # A caption truncated to nothing keeps its last real token, so its embedding is defined.
    empty = pool_mask.sum(dim=1) == 0
    if empty.any():
        last = batch["attention_mask"].sum(dim=1) - 1
        pool_mask[empty, last[empty]] = 1
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pool_mask": pool_mask,
    }


def bidirectional_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, 1, T, T] boolean mask: every token sees every real token. A 2D mask would make
    transformers build a causal mask again; an explicit 4D mask is taken as given."""
    length = attention_mask.shape[1]
    return attention_mask.bool()[:, None, None, :].expand(-1, 1, length, -1)


def mean_pool(hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    weights = pool_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class LLMTextEncoder(nn.Module):
    """Wraps a decoder-only base model (e.g. LlamaModel); returns one L2-normalised vector per caption."""

    def __init__(self, backbone: nn.Module, config: TextEncoderConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        mask = bidirectional_mask(attention_mask) if self.config.bidirectional else attention_mask
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return F.normalize(mean_pool(hidden.float(), pool_mask), dim=-1)

    @torch.no_grad()
    def encode(self, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        device = next(self.parameters()).device
        outputs = []
        for start in range(0, len(texts), batch_size):
            inputs = build_text_inputs(tokenizer, texts[start : start + batch_size], self.config)
            outputs.append(self(**{k: v.to(device) for k, v in inputs.items()}).cpu())
        return torch.cat(outputs) if outputs else torch.empty(0)
