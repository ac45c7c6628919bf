"""Caption retrieval accuracy on the held-out pairs, before and after fine-tuning (rank 0 scores both)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import torch

from models.text_encoder import LLMTextEncoder
from ops.retrieval_metrics import caption_retrieval_accuracy
from pipelines.finetune_text.config import FinetuneTextConfig


def held_out_cra(encoder, tokenizer, held_out: pa.Table, autocast_dtype: torch.dtype | None = None) -> float:
    """CRA of an encoder on the held-out pairs: each original caption must retrieve its own dense one.
    In eval mode and without gradients, so it draws no random numbers and leaves training as it was;
    under autocast_dtype where embed runs under it (bf16 on GPU)."""
    modes = {module: module.training for module in encoder.modules()}
    encoder.eval()
    device_type = next(encoder.parameters()).device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        first = encoder.encode(tokenizer, held_out["original"].to_pylist())
        second = encoder.encode(tokenizer, held_out["dense"].to_pylist())
    for module, training in modes.items():
        module.train(training)
    return caption_retrieval_accuracy(first, second)


def saved_encoder_cra(folder: str, held_out: pa.Table, device, autocast_dtype: torch.dtype | None) -> float:
    """CRA of the encoder folder as saved, loaded as the embed stage loads it: the score of the encoder
    that ships (merged, in the saved dtype), not of the LoRA model it came from."""
    from models.text_encoder_io import load_text_encoder

    encoder, tokenizer = load_text_encoder(folder)
    return held_out_cra(encoder.to(device), tokenizer, held_out, autocast_dtype)


def base_cra(backbone, tokenizer, config: FinetuneTextConfig, held_out: pa.Table, device) -> float:
    """CRA of the base LLM under the stage's pooling settings (before MNTP and LoRA), on the worker's
    device (the backbone moves there in place; training moves it there next anyway)."""
    encoder = LLMTextEncoder(backbone, dataclasses.replace(config.encoder)).to(device)
    return held_out_cra(encoder, tokenizer, held_out)
