"""embed's settings: which captions, which encoder, batch shape and Ray Data actors, as the recipe's `embed:`
section holds them."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ops.config_schema import check, check_model_reference
from ops.hashing import IN_KEY_WHEN_SET, NOT_IN_KEY


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    encoder: str = ""  # a text-encoder folder (path or URI); "" = the finetune_text stage's encoder
    # "" = the encoder folder's own encoder_config.json; "llm2vec" = an LLM2Vec-format model (an HF id or
    # folder, e.g. microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned) read with the official pooling
    encoder_preset: Literal["", "llm2vec"] = dataclasses.field(default="", metadata=IN_KEY_WHEN_SET)
    # Caption fields to embed: "original" is the sample's txt, "dense" comes from dense_caption_source,
    # any other name is a field of the sample's json.
    caption_fields: tuple[str, ...] = ("original", "dense")
    dense_caption_source: str = "column"  # column | recaption
    dense_caption_column: str = "dense_caption"
    dtype: str = "float16"  # sidecar storage: float16 | float32
    # Captions per encoder forward; in the key: a batch's padding and shape move the floats in the last
    # bits (the sidecars of two batch sizes are not bit-identical)
    batch_size: int = 128
    length_bucketing: bool = True  # sort a shard's captions by token length before batching
    # Encoder replicas (Ray Data actors) and the CPUs each reserves: where the work runs, not in the key
    num_actors: int = dataclasses.field(default=1, metadata=NOT_IN_KEY)
    use_gpu: bool = False  # in the key: GPU and CPU kernels differ in the last bits
    num_cpus_per_actor: float = dataclasses.field(default=1.0, metadata=NOT_IN_KEY)
    bf16: bool = True  # autocast on GPU
    export_reference_layout: bool = False  # also write reference/{shard}_text_embeddings.tar
    # Member names in the reference layout (its loader reads "shortsv_captions" and "longsv_captions").
    reference_field_names: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"original": "shortsv_captions", "dense": "longsv_captions"}
    )
    trust_remote_code: bool = False

    def __post_init__(self):
        check_model_reference(self.encoder, "encoder")
        check(
            not self.encoder_preset or bool(self.encoder),
            "encoder_preset",
            "used with an encoder reference (finetune_text's encoders need none)",
            self.encoder_preset,
        )
        check(len(self.caption_fields) > 0, "caption_fields", "at least one field", self.caption_fields)
        check(
            len(set(self.caption_fields)) == len(self.caption_fields),
            "caption_fields",
            "distinct names",
            self.caption_fields,
        )
        check(
            self.dense_caption_source in ("column", "recaption"),
            "dense_caption_source",
            "column or recaption",
            self.dense_caption_source,
        )
        check(self.dtype in ("float16", "float32"), "dtype", "float16 or float32", self.dtype)
        check(self.batch_size > 0, "batch_size", "a positive count", self.batch_size)
        check(self.num_actors > 0, "num_actors", "a positive count", self.num_actors)
        check(self.num_cpus_per_actor > 0, "num_cpus_per_actor", "a positive number", self.num_cpus_per_actor)
        if self.export_reference_layout:
            unnamed = [f for f in self.caption_fields if f not in self.reference_field_names]
            check(
                not unnamed,
                "reference_field_names",
                f"a name for every caption field (missing {unnamed})",
                "",
            )


def embed_inputs(config: EmbedConfig) -> tuple[str, ...]:
    needed = ["download"]
    if "dense" in config.caption_fields and config.dense_caption_source == "recaption":
        needed.append("recaption")
    if not config.encoder:
        needed.append("finetune_text")
    return tuple(needed)
