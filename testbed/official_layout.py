"""Tiny models in the official LLM2CLIP release's layouts, written from the release's documented facts
(not its code), for the converter and the llm2vec preset to be tested against:

- a vision checkpoint as microsoft/LLM2CLIP-Openai-L-14-336 has it: `model_type: clip` with `auto_map` to
  remote code (not shipped here), a CLIPVisionTransformer under `vision_model.*`, `visual_projection`, and
  the adapter `text_adapter.adaptor.{0..5}`: the input L2-normalised, four pre-LN residual blocks at the
  LLM's width (Linear d -> 2d, GELU, dropout, Linear 2d -> d), LayerNorm, Linear(d -> projection) with bias;
- a text encoder as the LLM2Vec-format CC-tuned Llama has it: a Llama's weights and tokenizer (with
  Llama-3's chat tokens) and an `auto_map` to remote code, also not shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

LLAMA3_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "hidden_act": "quick_gelu",
}


class OfficialLinearBlock(nn.Module):
    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.fn = nn.Sequential(
            nn.Linear(dim, expansion * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(expansion * dim, dim)
        )
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.ln(x))


class OfficialAdapter(nn.Module):
    def __init__(self, dim: int, projection_dim: int, depth: int = 4, expansion: int = 2):
        super().__init__()
        blocks = [OfficialLinearBlock(dim, expansion) for _ in range(depth)]
        self.adaptor = nn.Sequential(*blocks, nn.LayerNorm(dim), nn.Linear(dim, projection_dim, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptor(F.normalize(x, dim=-1))


class OfficialLayoutLLM2CLIP(nn.Module):
    """The official vision checkpoint's modules under its names, with the card's two feature methods."""

    def __init__(self, vision: dict, llm_dim: int, projection_dim: int):
        super().__init__()
        config = CLIPVisionConfig(**vision)
        tower = CLIPVisionModel(config)  # the transformer itself: in transformers 4 it sat one level down
        self.vision_model = getattr(tower, "vision_model", tower)
        self.visual_projection = nn.Linear(config.hidden_size, projection_dim, bias=False)
        self.text_adapter = OfficialAdapter(llm_dim, projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

    def get_text_features(self, llm_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_adapter(llm_embeddings)


def write_official_vision_checkpoint(
    folder: Path, llm_dim: int, projection_dim: int = 16, seed: int = 0
) -> OfficialLayoutLLM2CLIP:
    """The tiny official-layout model, every weight perturbed (so no LayerNorm is at its identity
    initialisation and a misplaced weight shows), saved as the release saves it."""
    torch.manual_seed(seed)
    model = OfficialLayoutLLM2CLIP(VISION, llm_dim, projection_dim)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LLM2CLIPModel"],
        "auto_map": {
            "AutoConfig": "configuration_clip.CLIPConfig",
            "AutoModel": "modeling_clip.LLM2CLIPModel",
        },
        "model_type": "clip",
        "projection_dim": projection_dim,
        "logit_scale_init_value": 2.6592,
        "vision_config": {**CLIPVisionConfig(**VISION).to_dict(), "model_type": "clip_vision_model"},
        "text_config": {"model_type": "clip_text_model"},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return model.eval()


def write_llm2vec_folder(folder: Path, seed: int = 3):
    """(folder, model, tokenizer): a tiny Llama in the LLM2Vec format of the official CC-tuned encoders."""
    from demo.basic_scenes import vocabulary_corpus
    from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
    from models.tiny_specs import TinyLlmSpec

    tokenizer = train_scene_tokenizer(vocabulary_corpus(), vocab_size=1024)
    tokenizer.add_tokens(LLAMA3_TOKENS, special_tokens=True)
    model = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=seed).model
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["LlamaEncoderModel"]
    config["auto_map"] = {"AutoModel": "modeling_llama_encoder.LlamaEncoderModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, model.eval(), tokenizer
