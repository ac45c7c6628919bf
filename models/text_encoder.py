"""An LLM as a caption encoder (LLM2Vec / LLM2CLIP): bidirectional attention, mean pooling.

Two poolings:
- "mean" (this project's encoders): right padding; the mean of the caption's own tokens' hidden states
  (padding, BOS and the optional instruction prefix left out), L2-normalised, so the same caption gets
  the same embedding in any batch.
- "llm2vec" (the official LLM2CLIP text encoders, e.g. LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned, read
  as LLM2Vec reads them): the caption wrapped in the chat template (Llama-3's user turn by default), left
  padding, the mean over the caption's tokens and the template's closing tokens (`<|eot_id|>`), taken in
  the model's dtype, not normalised, returned as float32. LLM2Vec counts those tokens by tokenizing
  them alone and pools that many last positions; so does this, to give its embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.text_encoder_config import TextEncoderConfig


def build_text_inputs(
    tokenizer, texts: list[str], config: TextEncoderConfig, instructions: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and pool_mask (1 on the tokens pooled): right-padded for "mean" pooling,
    left-padded for "llm2vec". `instructions`, one per text, replace config.instruction (fine-tuning's
    per-task query instructions); they are left out of pooling as it is."""
    if config.pooling == "llm2vec":
        return _llm2vec_inputs(tokenizer, texts, config, instructions)
    if instructions is not None:
        return _instructed_inputs(tokenizer, texts, config, instructions)
    if config.instruction:  # by character offsets: BPE may merge the instruction's end into the caption
        return _instructed_inputs(tokenizer, texts, config, [config.instruction] * len(texts))
    full = list(texts)
    batch = tokenizer(full, padding=True, truncation=True, max_length=config.max_length, return_tensors="pt")
    if tokenizer.padding_side != "right":
        raise ValueError(
            "build_text_inputs expects a right-padding tokenizer (tokenizer.padding_side='right')"
        )
    # The token before the caption: BOS, where the tokenizer adds one.
    prefix = 0
    if batch["input_ids"].shape[1] and tokenizer.bos_token_id is not None:
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


def _instructed_inputs(
    tokenizer, texts: list[str], config: TextEncoderConfig, instructions: list[str]
) -> dict[str, torch.Tensor]:
    """Right-padded inputs whose texts each carry their own instruction, pooled over the tokens that
    hold a character of the text: BOS and the instruction are left out, and a token that BPE merged
    across the boundary (LLM2Vec's "; " joins the caption's first word) counts as the caption's."""
    if len(instructions) != len(texts):
        raise ValueError(f"{len(instructions)} instructions for {len(texts)} texts")
    full = [instruction + text for instruction, text in zip(instructions, texts)]
    batch = tokenizer(
        full,
        padding=True,
        truncation=True,
        max_length=config.max_length,
        return_tensors="pt",
        return_offsets_mapping=True,  # a fast tokenizer's character spans
        padding_side="right",
    )
    text_start = torch.tensor([len(instruction) for instruction in instructions])[:, None]
    pool_mask = batch["attention_mask"] * (batch["offset_mapping"][..., 1] > text_start)
    for row in torch.nonzero(pool_mask.sum(dim=1) == 0).flatten().tolist():  # truncated to nothing
        pool_mask[row, int(batch["attention_mask"][row].sum()) - 1] = 1
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pool_mask": pool_mask,
    }


def _llm2vec_inputs(
    tokenizer, texts: list[str], config: TextEncoderConfig, instructions: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """LLM2Vec's tokenization: the wrapped texts left-padded (with BOS), and a pool mask on the last n
    positions of each row, n being the token count of its pooled tail tokenized alone."""
    instructions = instructions if instructions is not None else [config.instruction] * len(texts)
    parts = [config.llm2vec_parts(text, instruction) for text, instruction in zip(texts, instructions)]
    batch = tokenizer(
        [full for full, _ in parts],
        padding=True,
        truncation=True,
        max_length=config.max_length,
        return_tensors="pt",
        padding_side="left",
    )
    pool_mask = torch.zeros_like(batch["attention_mask"])
    for row, (_, tail) in enumerate(parts):
        count = len(
            tokenizer(tail, truncation=True, max_length=config.max_length, add_special_tokens=False).input_ids
        )
        if count:
            pool_mask[row, -count:] = 1
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


def llm2vec_pool(hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """LLM2Vec's mean: of each row's last n hidden states (n = its pool mask's count), in their dtype."""
    counts = pool_mask.sum(dim=1).tolist()
    return torch.stack([hidden[row, -count:].mean(dim=0) for row, count in enumerate(counts)])


class LLMTextEncoder(nn.Module):
    """Wraps a decoder-only base model (e.g. LlamaModel); returns one vector per caption: L2-normalised
    with "mean" pooling, as LLM2Vec gives it (float32, not normalised) with "llm2vec"."""

    def __init__(self, backbone: nn.Module, config: TextEncoderConfig):
        super().__init__()
        self.backbone = backbone
        self.config = config

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        mask = bidirectional_mask(attention_mask) if self.config.bidirectional else attention_mask
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.config.pooling == "llm2vec":
            return llm2vec_pool(hidden, pool_mask).float()
        return F.normalize(mean_pool(hidden.float(), pool_mask), dim=-1)

    @torch.no_grad()
    def encode(self, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        device = next(self.parameters()).device
        outputs = []
        for start in range(0, len(texts), batch_size):
            inputs = build_text_inputs(tokenizer, texts[start : start + batch_size], self.config)
            outputs.append(self(**{k: v.to(device) for k, v in inputs.items()}).cpu())
        return torch.cat(outputs) if outputs else torch.empty(0)
