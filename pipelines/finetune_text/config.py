"""finetune_text's settings: what the recipe's `finetune_text:` section holds, checked on load."""

from __future__ import annotations

import dataclasses
from typing import Literal

from models.text_encoder_config import LoraSpec, TextEncoderConfig
from ops.config_schema import check, check_model_reference
from ops.hashing import IN_KEY_WHEN_SET, NOT_IN_KEY

QUERY_SIDES = ("first", "random")  # which caption of a pair is the query (see loop.order_sides)


BASE_MODEL_STAGES = ("tiny_models", "lm_pretrain")  # stages that write an llm/ folder
CAPTION_TASK = "captions"  # the task name of the caption pairs among text_pairs' tasks


def query_prefix(instruction: str) -> str:
    """A query instruction as LLM2Vec's supervised data writes it before the query: "{instruction}; "."""
    return f"{instruction.strip()}; " if instruction.strip() else ""


@dataclasses.dataclass(frozen=True)
class TextPairSource:
    """A general text-pair set mixed into fine-tuning, as LLM2CLIP mixes E5's with its caption pairs: a
    local parquet or JSON-lines file with `query`, `positive` and (for hard negatives) `negative`."""

    name: str  # the task: each global batch holds pairs of one task only, as LLM2Vec batches E5
    path: str  # local .parquet / .jsonl file
    format: Literal["auto", "parquet", "jsonl"] = "auto"  # auto: by the file's suffix
    instruction: str = ""  # put before every query (as "{instruction}; "), left out of pooling
    max_rows: int = 0  # the first max_rows rows; 0 = all

    def __post_init__(self):
        check(
            bool(self.name) and self.name != CAPTION_TASK,
            "name",
            f"a name other than {CAPTION_TASK}",
            self.name,
        )
        check(bool(self.path), "path", "a parquet or jsonl file", self.path)
        check(self.max_rows >= 0, "max_rows", "zero (all) or a row count", self.max_rows)


@dataclasses.dataclass(frozen=True)
class FinetuneTextConfig:
    base_model: str = ""  # HF id or local path of a causal LLM; "" = base_model_stage's LLM
    # Which stage's llm/ folder is the base model when base_model is "": the tiny_models stage's random-init
    # LLM (the demo) or the lm_pretrain stage's pretrained one (the long-caption experiment).
    base_model_stage: str = "tiny_models"
    # CRA's query caption for each held-out image (its key is the dense caption): "original" (the
    # alt-text) or "short_dense" (see short_dense_source; for rich scenes, a paraphrase of the dense
    # caption, which tells family siblings apart where their shared alt-text cannot).
    cra_query_column: str = "original"
    # Where each image's dense caption comes from: a field img2dataset kept from the url table
    # (a provided recaption, or the demo's ground truth), or the recaption stage's output.
    dense_caption_source: str = "column"  # column | recaption
    dense_caption_column: str = "dense_caption"
    # (short dense, long dense) pairs beside (original, dense): none, a provided column, or the dense
    # caption's first sentences (DreamLIP's short captions). Images whose dense caption has no more
    # than short_dense_sentences sentences get no such pair.
    short_dense_source: str = "none"  # none | column | first_sentences
    short_dense_column: str = "short_dense_caption"
    short_dense_sentences: int = 1
    # Which caption of a pair is the query: "first" (the alt-text or short caption; the dense caption is
    # always the key, as LLM2Vec trains) or "random" per pair. A pretrained LLM collapses under "random"
    # (see loop.order_sides); the random-init demo LLM learns under both.
    query_side: str = "first"
    # Per pair, one negative beside the in-batch ones: the same-kind caption of another image, drawn at
    # random ("random", the release's choice), or the closest-worded one ("mined", ops/hard_negatives.py:
    # bag-of-words cosine, and a candidate above negative_max_similarity is passed over as a likely caption
    # of the same scene: web data is full of near-duplicates); "none": in-batch negatives alone.
    negatives: Literal["none", "random", "mined"] = "random"
    negative_max_similarity: float = 0.9  # mined only: bag-of-words cosine ceiling, in (0, 1]
    # General text pairs mixed with the caption pairs (LLM2CLIP: E5), each set a task of its own; with
    # negatives every set needs a `negative` column.
    text_pairs: tuple[TextPairSource, ...] = dataclasses.field(default=(), metadata=IN_KEY_WHEN_SET)
    # Put before every caption-pair query, e.g. LLM2CLIP's "Given a sentence, retrieve a detailed relevant
    # sentence"; left out of pooling. The embed stage encodes captions without it.
    caption_query_instruction: str = dataclasses.field(default="", metadata=IN_KEY_WHEN_SET)
    eval_split_value: str = "eval"  # rows whose `split` field equals this are held out for CRA
    num_eval_pairs: int = 256  # held out by key hash when the data has no `split` field
    encoder: TextEncoderConfig = dataclasses.field(default_factory=TextEncoderConfig)
    lora: LoraSpec | None = dataclasses.field(default_factory=LoraSpec)  # null: full fine-tuning
    temperature: float = 0.02  # LLM2CLIP's logit scale 50
    max_steps: int = 200  # optimizer steps
    batch_size_per_worker: int = 32  # pairs; the loss sees num_workers x this many keys
    # Pairs each worker holds at once: an epoch is shuffled window by window (batches.py), so memory stays
    # flat however many pairs there are. In the key: with more pairs than this, it decides the batches.
    # The release shuffles the whole set; one window of this size is a full shuffle of up to 65,536 pairs.
    shuffle_window_pairs: int = 65536
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    num_workers: int = 2  # Ray Train workers; in the key: the global batch is num_workers x the above
    use_gpu: bool = False
    bf16: bool = True  # autocast on GPU
    gradient_checkpointing: bool = False
    # How often to checkpoint and how many failures to survive: not in the key (they change no weight),
    # so raising max_failures after a crash resumes the run instead of restarting it.
    checkpoint_every_steps: int = dataclasses.field(default=50, metadata=NOT_IN_KEY)
    max_failures: int = dataclasses.field(
        default=1, metadata=NOT_IN_KEY
    )  # recovered from the last checkpoint
    # Where Ray places the workers (Ray Train's ScalingConfig.placement_strategy): PACK fills a node first,
    # SPREAD puts them on different nodes. Not part of the key: it changes no result.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = dataclasses.field(
        default="PACK", metadata=NOT_IN_KEY
    )
    seed: int = 0
    trust_remote_code: bool = False
    # LLM2Vec's masked next-token prediction before contrastive training; 0 = off (LLM2CLIP skips it)
    mntp_steps: int = 0
    mntp_learning_rate: float = 5e-4
    mntp_mask_probability: float = 0.2  # fraction of caption tokens masked
    mntp_mask_token: str = "_"  # used when the tokenizer has no mask token (LLM2Vec's choice for Llama)

    def __post_init__(self):
        check_model_reference(self.base_model, "base_model")
        check(
            self.shuffle_window_pairs >= self.batch_size_per_worker * self.num_workers,
            "shuffle_window_pairs",
            "at least one global batch (num_workers x batch_size_per_worker)",
            self.shuffle_window_pairs,
        )
        check(
            0 < self.negative_max_similarity <= 1,
            "negative_max_similarity",
            "in (0, 1]",
            self.negative_max_similarity,
        )
        check(
            self.cra_query_column in ("original", "short_dense"),
            "cra_query_column",
            "original or short_dense",
            self.cra_query_column,
        )
        check(
            self.cra_query_column == "original" or self.short_dense_source != "none",
            "cra_query_column",
            "original unless short_dense_source gives a short_dense caption",
            self.cra_query_column,
        )
        check(
            self.base_model_stage in BASE_MODEL_STAGES,
            "base_model_stage",
            f"one of {BASE_MODEL_STAGES}",
            self.base_model_stage,
        )
        check(
            self.dense_caption_source in ("column", "recaption"),
            "dense_caption_source",
            "column or recaption",
            self.dense_caption_source,
        )
        check(self.query_side in QUERY_SIDES, "query_side", f"one of {QUERY_SIDES}", self.query_side)
        check(
            not (self.text_pairs or self.caption_query_instruction) or self.query_side == "first",
            "query_side",
            "first with text_pairs or a caption_query_instruction (a query stays a query)",
            self.query_side,
        )
        names = [source.name for source in self.text_pairs]
        check(len(set(names)) == len(names), "text_pairs", "distinct names", names)
        instructed = bool(self.caption_query_instruction) or any(s.instruction for s in self.text_pairs)
        check(
            not (instructed and self.encoder.instruction),
            "encoder.instruction",
            "empty when query instructions are set (each query gets its own)",
            self.encoder.instruction,
        )
        check(self.temperature > 0, "temperature", "a positive number", self.temperature)
        for name in ("max_steps", "batch_size_per_worker", "num_workers", "checkpoint_every_steps"):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)
        check(self.num_eval_pairs > 0, "num_eval_pairs", "a positive count", self.num_eval_pairs)
        check(self.max_failures >= 0, "max_failures", "zero or more", self.max_failures)
        check(
            self.short_dense_source in ("none", "column", "first_sentences"),
            "short_dense_source",
            "none, column or first_sentences",
            self.short_dense_source,
        )
        check(
            self.short_dense_sentences > 0,
            "short_dense_sentences",
            "a positive count",
            self.short_dense_sentences,
        )
        check(self.mntp_steps >= 0, "mntp_steps", "zero (off) or a positive count", self.mntp_steps)
        check(
            0 < self.mntp_mask_probability < 1,
            "mntp_mask_probability",
            "in (0, 1)",
            self.mntp_mask_probability,
        )


def finetune_inputs(config: FinetuneTextConfig) -> tuple[str, ...]:
    needed = ["download"]
    if config.dense_caption_source == "recaption":
        needed.append("recaption")
    if not config.base_model:
        needed.append(config.base_model_stage)
    return tuple(needed)
