"""Caption retrieval accuracy on the held-out pairs, before and after fine-tuning (rank 0 scores both)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from models.text_encoder import LLMTextEncoder
from ops.retrieval_metrics import caption_retrieval_accuracy
from pipelines.finetune_text.config import FinetuneTextConfig


def held_out_cra(encoder, tokenizer, held_out: pa.Table) -> float:
    """CRA of an encoder on the held-out pairs: each original caption must retrieve its own dense one.
    In eval mode and without gradients, so it draws no random numbers and leaves training as it was."""
    modes = {module: module.training for module in encoder.modules()}
    encoder.eval()
    first = encoder.encode(tokenizer, held_out["original"].to_pylist())
    second = encoder.encode(tokenizer, held_out["dense"].to_pylist())
    for module, training in modes.items():
        module.train(training)
    return caption_retrieval_accuracy(first, second)


def base_cra(backbone, tokenizer, config: FinetuneTextConfig, held_out: pa.Table, device) -> float:
    """CRA of the base LLM under the stage's pooling settings (before MNTP and LoRA), on the worker's
    device (the backbone moves there in place; training moves it there next anyway)."""
    encoder = LLMTextEncoder(backbone, dataclasses.replace(config.encoder)).to(device)
    return held_out_cra(encoder, tokenizer, held_out)
