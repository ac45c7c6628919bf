"""What configures a text encoder, without torch: a recipe's config classes import these, and the
workflow's --help and plan load no deep-learning library."""

from __future__ import annotations

import dataclasses
from typing import Literal

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


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )

    def __post_init__(self):
        check(self.rank > 0, "rank", "a positive integer", self.rank)
        check(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        check(bool(self.target_modules), "target_modules", "at least one module name", self.target_modules)
