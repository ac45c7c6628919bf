"""The baseline LLM2CLIP argues against: CLIP as OpenAI trained it, a vision tower and a small text
transformer trained jointly from scratch, with the text cut at 77 tokens.

Features are mean-pooled over the caption's tokens rather than taken at an end-of-text token: CLIP's
pooling relies on its own tokenizer's EOT id, and the baseline here shares the LLM's tokenizer.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, PretrainedConfig

from models.llm2clip import MAX_LOGIT_SCALE, VISION_TOWERS

CLIP_CONTEXT_TOKENS = 77  # OpenAI CLIP's text context length


@dataclasses.dataclass(frozen=True)
class TextTowerSpec:
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    max_tokens: int = CLIP_CONTEXT_TOKENS  # captions are cut here, as CLIP's context cuts them

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.max_tokens <= 0 or self.num_layers <= 0:
            raise ValueError("max_tokens and num_layers must be positive")


class TextTowerCLIP(nn.Module):
    """Vision tower + projection, text transformer + projection, a clamped learnable logit scale."""

    def __init__(
        self,
        vision_config: PretrainedConfig,
        vocab_size: int,
        special_token_ids: dict[str, int],
        spec: TextTowerSpec,
        projection_dim: int,
    ):
        super().__init__()
        _, tower_cls = VISION_TOWERS[vision_config.model_type]
        self.vision_model = tower_cls(vision_config)
        self.visual_projection = nn.Linear(vision_config.hidden_size, projection_dim, bias=False)
        text_config = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=spec.hidden_size,
            intermediate_size=4 * spec.hidden_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            max_position_embeddings=spec.max_tokens,
            **special_token_ids,  # pad/bos/eos of the shared tokenizer, not CLIP's own ids
        )
        self.text_model = CLIPTextModel(text_config)
        self.text_projection = nn.Linear(spec.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.max_tokens = spec.max_tokens

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.max_tokens:
            raise ValueError(f"{input_ids.shape[1]} tokens: the text tower takes at most {self.max_tokens}")
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.text_projection(pooled)

    def clamped_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        image = F.normalize(self.get_image_features(pixel_values), dim=-1)
        text = F.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)
        return {"image_embeds": image, "text_embeds": text, "logit_scale": self.clamped_logit_scale()}


def tokenize_for_clip(tokenizer, texts: list[str], max_tokens: int) -> tuple[dict[str, torch.Tensor], float]:
    """Token ids cut and padded to max_tokens (rows of equal width), and the share of texts that lost
    tokens to the cut."""
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    truncated = sum(len(ids) > max_tokens for ids in full) / max(len(full), 1)
    batch = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
        add_special_tokens=True,
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, truncated
