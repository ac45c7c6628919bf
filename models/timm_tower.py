"""timm vision towers (EVA02 and friends, as LLM2CLIP's EVA02-CLIP models) behind the interface the
LLM2CLIP model expects from an HF vision model: `forward(pixel_values).pooler_output`, `config`,
`save_pretrained` / `from_pretrained` (safetensors).

timm needs torchvision, which the CPU stack cannot have (docs/cpu_stack.md), so timm is imported only when a
tower is built: this module imports fine without it.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

TIMM_PREFIX = "timm:"  # train_vision.vision_model "timm:eva02_large_patch14_clip_336.merged2b"


class TimmVisionConfig(PretrainedConfig):
    model_type = "timm_vision_model"

    def __init__(
        self,
        timm_name: str = "eva02_large_patch14_clip_336",
        image_size: int = 336,  # pixels
        hidden_size: int = 1024,  # the pooled feature size (timm's num_features)
        num_hidden_layers: int = 24,  # blocks, for layer-wise lr decay
        image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073),
        image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.timm_name = timm_name
        self.image_size = image_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)


def _create(name: str, image_size: int | None, pretrained: bool) -> nn.Module:
    """A headless timm model (pooled features out); image_size None keeps the model's default."""
    try:  # (a try block also keeps transformers' remote-code import check from requiring timm)
        import timm  # needs torchvision: GPU profile only
    except ImportError as error:
        raise ImportError(f"the timm tower {name!r} needs timm and torchvision (the GPU profile)") from error

    size = {"img_size": image_size} if image_size else {}
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **size)


class TimmVisionTower(PreTrainedModel):
    config_class = TimmVisionConfig
    main_input_name = "pixel_values"
    base_model_prefix = "timm_tower"

    def __init__(self, config: TimmVisionConfig, backbone: nn.Module | None = None):
        super().__init__(config)
        self.backbone = (
            backbone if backbone is not None else _create(config.timm_name, config.image_size, False)
        )

    def _init_weights(self, module: nn.Module) -> None:
        """timm initialises (or loads) its own weights."""

    @classmethod
    def from_timm(cls, name: str, pretrained: bool = True, image_size: int | None = None) -> TimmVisionTower:
        """A tower with timm's weights (from the Hugging Face hub when pretrained) and its normalisation."""
        backbone = _create(name, image_size, pretrained)
        data = getattr(backbone, "pretrained_cfg", {}) or {}
        size = image_size or int(data.get("input_size", (3, 224, 224))[-1])
        blocks = getattr(backbone, "blocks", None)
        config = TimmVisionConfig(
            timm_name=name,
            image_size=size,
            hidden_size=int(backbone.num_features),
            num_hidden_layers=len(blocks) if blocks is not None else 1,
            image_mean=tuple(data.get("mean", TimmVisionConfig().image_mean)),
            image_std=tuple(data.get("std", TimmVisionConfig().image_std)),
        )
        return cls(config, backbone)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        del gradient_checkpointing_kwargs
        self.backbone.set_grad_checkpointing(True)

    def forward(self, pixel_values, **kwargs) -> BaseModelOutputWithPooling:
        del kwargs
        return BaseModelOutputWithPooling(pooler_output=self.backbone(pixel_values))
