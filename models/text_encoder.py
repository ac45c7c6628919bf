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

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ops.config_schema import check
from ops.hashing import IN_KEY_WHEN_SET

CAPTION = "{caption}"
# The Llama-3 Instruct user turn that LLM2Vec wraps every text in for Llama-3 Instruct models.
LLAMA3_USER_TURN = "<|start_header_id|>user<|end_header_id|>\n\n{caption}<|eot_id|>"


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    pooling: Literal["mean", "llm2vec"] = "mean"
    bidirectional: bool = True  # remove the causal mask, as LLM2Vec does before contrastive training
    max_length: int = 512  # tokens per caption, instruction included; longer captions are truncated
    instruction: str = ""  # prepended to every caption and excluded from pooling, e.g. "Caption: "
    # llm2vec pooling: the text around the caption, "{caption}" marks its place. Part of a stage's key only
    # when set (encoders configured before it existed keep their keys).
    template: str = dataclasses.field(default=CAPTION, metadata=IN_KEY_WHEN_SET)

    def __post_init__(self):
        check(self.max_length > 1, "max_length", "more than one token", self.max_length)
        check(self.template.count(CAPTION) == 1, "template", f"one {CAPTION} placeholder", self.template)
        check(
            self.pooling == "llm2vec" or self.template == CAPTION,
            "template",
            f"{CAPTION} alone unless pooling is llm2vec",
            self.template,
        )

    @classmethod
    def llm2vec(cls, template: str = LLAMA3_USER_TURN, max_length: int = 512) -> TextEncoderConfig:
        """The official LLM2CLIP text encoders' settings: LLM2Vec's mean pooling over the Llama-3 user
        turn, bidirectional attention, 512 tokens."""
        return cls(pooling="llm2vec", bidirectional=True, max_length=max_length, template=template)

    def full_text(self, caption: str) -> str:
        """What is tokenized for a caption: the instruction and caption, wrapped in the template."""
        if self.pooling != "llm2vec":
            return self.instruction + caption
        return self.llm2vec_parts(caption, self.instruction)[0]

    def llm2vec_parts(self, caption: str, instruction: str) -> tuple[str, str]:
        """(the full text, its pooled tail) as LLM2Vec builds them: it joins "instruction <sep>caption",
        wraps it, stripping it first when there is a template (which, the joined text starting with the
        instruction or the separator, takes only the caption's trailing whitespace), and pools the part
        after the separator."""
        prefix, suffix = self.template.split(CAPTION)
        head = f"{instruction.strip()} " if instruction else ""
        if self.template != CAPTION:
            # LLM2Vec strips the joined text before wrapping it: a whitespace-only instruction's " "
            # goes, as does the caption's trailing whitespace
            head, caption = head.lstrip(), caption.rstrip()
        return prefix + head + caption + suffix, caption + suffix


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
