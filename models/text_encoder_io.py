"""LoRA on the text encoder's backbone, and the encoder folder: merged safetensors + encoder config.

The embed stage loads exactly what fine-tuning saved: the same weights (LoRA merged in), tokenizer,
pooling, attention direction, max length and instruction.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from models.text_encoder import LLMTextEncoder
from models.text_encoder_config import LoraSpec, TextEncoderConfig
from ops.config_schema import build_config

if TYPE_CHECKING:
    from peft import PeftModel

# peft and transformers' auto classes are imported where used: importing them costs seconds (peft pulls in
# transformers' generation stack and scikit-learn), and every workflow process imports this module for
# LoraSpec alone (`full.py --help`, `--dry-run`, drivers whose stages run in Ray workers).

ENCODER_CONFIG_NAME = "encoder_config.json"


def apply_lora(backbone: nn.Module, spec: LoraSpec, layers: list[int] | None = None) -> PeftModel:
    """Wrap the backbone so that only the LoRA adapters train: on every decoder layer, as LLM2Vec does,
    or on `layers` only (the long-caption experiment's ablation bench)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        **({"layers_to_transform": layers, "layers_pattern": "layers"} if layers else {}),
    )
    return get_peft_model(backbone, config)


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """Recompute activations in backward to save memory. Non-reentrant checkpointing, because with
    LoRA the frozen embeddings' outputs do not require grad and the reentrant variant would then drop
    the adapters' gradients."""
    backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_backbone(model: str, trust_remote_code: bool = False, causal_lm: bool = False):
    """(model, tokenizer) of a base LLM from an HF id, a local folder or an object-store folder: the model
    that gives hidden states, or with causal_lm the model with its LM head (for MNTP). Weights only from
    safetensors; right padding, and eos as the pad token where the tokenizer has none (Llama)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from ops.model_files import local_model

    with local_model(model) as source:  # an object-store folder is copied to this node first
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        loader = AutoModelForCausalLM if causal_lm else AutoModel
        backbone = loader.from_pretrained(source, trust_remote_code=trust_remote_code, use_safetensors=True)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:  # Llama tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return backbone, tokenizer


def save_text_encoder(encoder: LLMTextEncoder, tokenizer, folder: str | Path) -> None:
    """Merged weights as fp32 safetensors, the tokenizer and encoder_config.json in one folder. LoRA is
    merged in fp32: added to bf16 weights, an update below bf16's resolution (about 0.4% of a weight)
    would be rounded away, and the saved encoder would no longer be the one that was trained. The encoder
    is moved to the CPU and to fp32 in place."""
    from peft import PeftModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = encoder.backbone.cpu().float()
    if isinstance(backbone, PeftModel):
        backbone = backbone.merge_and_unload()
    backbone.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / ENCODER_CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(encoder.config), indent=2))


ENCODER_PRESETS = ("", "llm2vec")  # "": the folder's encoder_config.json; "llm2vec": an LLM2Vec-format model


def open_text_encoder(
    reference: str, preset: str = "", trust_remote_code: bool = False
) -> tuple[LLMTextEncoder, object]:
    """(encoder, tokenizer) by reference: a local folder, an object-store folder or (llm2vec) an HF id.

    preset "": a text-encoder folder this project wrote (encoder_config.json says how it pools).
    preset "llm2vec": an LLM2Vec-format model such as microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned,
    loaded as a plain model of its type (a bidirectional Llama's weights are a LlamaModel's; the encoder
    removes the causal mask itself), so its remote code is not needed; read with
    TextEncoderConfig.llm2vec(), the official embedding."""
    from ops.model_files import local_model

    if preset == "llm2vec":
        backbone, tokenizer = load_backbone(reference, trust_remote_code=trust_remote_code)
        return LLMTextEncoder(backbone.eval(), TextEncoderConfig.llm2vec()), tokenizer
    if preset:
        raise ValueError(f"encoder preset {preset!r}: expected one of {ENCODER_PRESETS}")
    with local_model(reference) as folder:
        return load_text_encoder(folder, trust_remote_code=trust_remote_code)


def load_text_encoder(folder: str | Path, trust_remote_code: bool = False) -> tuple[LLMTextEncoder, object]:
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    config_path = folder / ENCODER_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no {ENCODER_CONFIG_NAME}; not a text-encoder folder of this project "
            "(an LLM2Vec-format model, as the official LLM2CLIP encoders are, needs encoder_preset: llm2vec)"
        )
    config = build_config(TextEncoderConfig, json.loads(config_path.read_text()), ENCODER_CONFIG_NAME)
    backbone = AutoModel.from_pretrained(folder, trust_remote_code=trust_remote_code, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "right"
    return LLMTextEncoder(backbone.eval(), config), tokenizer
