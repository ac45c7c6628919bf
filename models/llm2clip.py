"""The LLM2CLIP model: a vision tower with a projection, and on the text side an adapter over frozen LLM
caption embeddings (precomputed by the embed stage), meeting in one shared space.

Only the vision side and the adapter train; the LLM is never loaded here. The model offers
`get_image_features(pixel_values)` and `get_text_features(llm_embeddings)`, as the LLM2CLIP model card
does.

This file is self-contained on purpose (torch, transformers and the sibling timm_tower.py only, imported
relatively): an export folder ships a copy of it as `modeling_llm2clip.py`, which `AutoModel` loads with
`trust_remote_code=True` on a machine without this project. Imported as the project's own module, it
registers the `llm2clip` model type with AutoConfig / AutoModel, so the same folder also loads without
remote code wherever the project is installed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from .timm_tower import TimmVisionConfig, TimmVisionTower

VISION_TOWERS = {
    "clip_vision_model": (CLIPVisionConfig, CLIPVisionModel),
    "siglip_vision_model": (SiglipVisionConfig, SiglipVisionModel),
    "timm_vision_model": (TimmVisionConfig, TimmVisionTower),  # EVA02 etc.; needs timm (GPU profile)
}
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: temperature never below 0.01


class LLM2CLIPConfig(PretrainedConfig):
    """Sizes: llm_dim is the text encoder's embedding size (the sidecars' dim); the adapter is an input
    projection to adapter_width (or none: then the blocks run at llm_dim, as in the official release),
    adapter_depth residual MLP blocks of hidden size adapter_expansion x width, a LayerNorm and an output
    projection (with a bias or not) into projection_dim, the shared space."""

    model_type = "llm2clip"

    def __init__(
        self,
        vision_config: dict | None = None,
        llm_dim: int = 4096,
        adapter_width: int = 1024,
        adapter_depth: int = 4,
        projection_dim: int = 1280,
        adapter_dropout: float = 0.0,
        logit_scale_init: float = math.log(1 / 0.07),
        adapter_expansion: int = 4,
        adapter_input_projection: bool = True,
        adapter_output_bias: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vision_config = dict(vision_config or CLIPVisionConfig().to_dict())
        self.vision_config.setdefault("model_type", "clip_vision_model")
        if self.vision_config["model_type"] not in VISION_TOWERS:
            raise ValueError(
                f"vision_config.model_type: expected one of {sorted(VISION_TOWERS)}, "
                f"got {self.vision_config['model_type']!r}"
            )
        self.llm_dim = llm_dim
        self.adapter_width = adapter_width
        self.adapter_depth = adapter_depth
        self.projection_dim = projection_dim
        self.adapter_dropout = adapter_dropout
        self.logit_scale_init = logit_scale_init
        self.adapter_expansion = adapter_expansion
        self.adapter_input_projection = adapter_input_projection
        self.adapter_output_bias = adapter_output_bias
        if not adapter_input_projection and adapter_width != llm_dim:
            raise ValueError(
                f"adapter_width ({adapter_width}) must equal llm_dim ({llm_dim}) when the adapter has no "
                "input projection (adapter_input_projection=False): its blocks run at the LLM's width"
            )

    def vision_tower_config(self) -> PretrainedConfig:
        config_cls, _ = VISION_TOWERS[self.vision_config["model_type"]]
        return config_cls(**{k: v for k, v in self.vision_config.items() if k != "model_type"})


class ResidualMlpBlock(nn.Module):
    """Pre-LN residual MLP: x + Linear(GELU(Linear(LayerNorm(x)))), hidden size expansion x width."""

    def __init__(self, width: int, dropout: float, expansion: int = 4):
        super().__init__()
        hidden = expansion * width
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class LLMFeatureAdapter(nn.Module):
    """LLM2CLIP's text-side adapter: L2-normalised LLM features -> linear (optional) -> residual MLP
    blocks -> LayerNorm -> linear into the shared space."""

    def __init__(
        self,
        llm_dim: int,
        width: int,
        depth: int,
        out_dim: int,
        dropout: float = 0.0,
        expansion: int = 4,
        input_projection: bool = True,
        output_bias: bool = False,
    ):
        super().__init__()
        self.input = nn.Linear(llm_dim, width) if input_projection else nn.Identity()
        self.blocks = nn.ModuleList(ResidualMlpBlock(width, dropout, expansion) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, out_dim, bias=output_bias)

    def forward(self, llm_embeddings: torch.Tensor) -> torch.Tensor:
        # normalised in fp32, then in the adapter's own dtype (bf16 when trained with bf16 weights)
        x = F.normalize(llm_embeddings.float(), dim=-1).to(self.norm.weight.dtype)
        x = self.input(x)
        for block in self.blocks:
            x = block(x)
        return self.output(self.norm(x))


class LLM2CLIPModel(PreTrainedModel):
    config_class = LLM2CLIPConfig
    base_model_prefix = "llm2clip"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: LLM2CLIPConfig):
        super().__init__(config)
        vision_config = config.vision_tower_config()
        _, tower_cls = VISION_TOWERS[config.vision_config["model_type"]]
        self.vision_model = tower_cls(vision_config)
        self.visual_projection = nn.Linear(vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_adapter = LLMFeatureAdapter(
            config.llm_dim,
            config.adapter_width,
            config.adapter_depth,
            config.projection_dim,
            config.adapter_dropout,
            config.adapter_expansion,
            config.adapter_input_projection,
            config.adapter_output_bias,
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # The vision tower initialises itself (or comes pretrained); only our layers need it here.
        if isinstance(module, nn.Linear) and not any(module is m for m in self.vision_model.modules()):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled)

    def get_text_features(self, llm_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_adapter(llm_embeddings)

    def clamped_logit_scale(self) -> torch.Tensor:
        """exp(logit_scale), at most MAX_LOGIT_SCALE (the clamp keeps the gradient below it)."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, pixel_values: torch.Tensor, llm_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """L2-normalised image and text features, and the logit scale."""
        image = F.normalize(self.get_image_features(pixel_values), dim=-1)
        text = F.normalize(self.get_text_features(llm_embeddings), dim=-1)
        return {"image_embeds": image, "text_embeds": text, "logit_scale": self.clamped_logit_scale()}

    @classmethod
    def with_vision_tower(cls, config: LLM2CLIPConfig, tower: PreTrainedModel) -> LLM2CLIPModel:
        """A model whose vision tower starts from given (e.g. pretrained CLIP) weights."""
        config.vision_config = tower.config.to_dict()
        model = cls(config)
        model.vision_model.load_state_dict(tower.state_dict())
        return model

    def save_vision_tower(self, folder) -> None:
        """The vision tower alone, as a standard HF vision-model folder (LLaVA-style downstream use)."""
        self.vision_model.save_pretrained(folder, safe_serialization=True)


if __name__ == "models.llm2clip":  # the project's module, not an export's copy loaded as remote code
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(LLM2CLIPConfig.model_type, LLM2CLIPConfig)
    AutoModel.register(LLM2CLIPConfig, LLM2CLIPModel)
