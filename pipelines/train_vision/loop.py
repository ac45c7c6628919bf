"""The LLM2CLIP vision training loop, free of Ray: symmetric CLIP loss between the vision tower's
features and the adapter's features of precomputed LLM embeddings, gathered across workers when a
process group is up. Runs in one process (tests, bench) or per Ray Train worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from models.llm2clip import LLM2CLIPModel
from ops.clip_loss import clip_loss
from ops.distributed import average_gradients, gather_with_grad, rank_and_world
from ops.schedules import warmup_cosine_scheduler


@dataclasses.dataclass(frozen=True)
class VisionLoopSettings:
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_steps: int
    max_grad_norm: float
    layer_decay: float = 1.0  # vision layer i of n trains at lr * layer_decay ** (n - i); 1.0 = off
    fused_adamw: bool = False  # torch's fused AdamW kernel (one launch for every parameter on GPU)


def _vision_depth(name: str, num_layers: int) -> int | None:
    """0 for the patch embeddings, i + 1 for encoder layer i, num_layers + 1 above; None off the tower."""
    if not name.startswith("vision_model."):
        return None
    if any(
        part in name for part in (".embeddings.", "pre_layrnorm", ".patch_embed.", ".pos_embed", ".cls_token")
    ):
        return 0
    for marker in (".encoder.layers.", ".backbone.blocks."):  # HF CLIP/SigLIP, timm (EVA02)
        if marker in name:
            return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
    return num_layers + 1


def build_optimizer(model: LLM2CLIPModel, settings: VisionLoopSettings):
    """AdamW with layer-wise lr decay over the vision tower; no weight decay on biases, norms and the
    logit scale; cosine schedule with linear warmup."""
    num_layers = model.vision_model.config.num_hidden_layers
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = _vision_depth(name, num_layers)
        scale = 1.0 if depth is None else settings.layer_decay ** (num_layers + 1 - depth)
        no_decay = parameter.ndim < 2 or name == "logit_scale"
        groups.setdefault((scale, 0.0 if no_decay else settings.weight_decay), []).append(parameter)
    param_groups = [
        {"params": params, "lr": settings.learning_rate * scale, "weight_decay": decay, "lr_scale": scale}
        for (scale, decay), params in groups.items()
    ]
    optimizer = torch.optim.AdamW(param_groups, lr=settings.learning_rate, fused=settings.fused_adamw or None)
    return optimizer, warmup_cosine_scheduler(optimizer, settings.warmup_steps, settings.max_steps)


def step_loss(model: LLM2CLIPModel, pixel_values: torch.Tensor, llm_embeddings: torch.Tensor) -> torch.Tensor:
    """This worker's share of the global CLIP loss: local rows against every worker's rows."""
    rank, _ = rank_and_world()
    out = model(pixel_values=pixel_values, llm_embeddings=llm_embeddings)
    image, text = out["image_embeds"], out["text_embeds"]
    return clip_loss(
        image,
        text,
        out["logit_scale"],
        gather_with_grad(image),
        gather_with_grad(text),
        labels_offset=rank * image.shape[0],
    )


def train_steps(
    model: LLM2CLIPModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    settings: VisionLoopSettings,
    optimizer,
    scheduler,
    start_step: int,
    on_step: Callable[[int, dict[str, float]], None],
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """Optimise until max_steps; on_step(step, metrics) after each step (logging, checkpoints, eval)."""
    model.train()
    step = start_step
    trainable = [p for p in model.parameters() if p.requires_grad]
    iterator = iter(batches)
    while step < settings.max_steps:  # checked before drawing: an unused batch would move the data position
        drawn = next(iterator, None)
        if drawn is None:
            break
        pixel_values, llm_embeddings = drawn
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = step_loss(model, pixel_values.to(device), llm_embeddings.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(trainable)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        on_step(
            step,
            {
                "loss": loss.item(),
                "logit_scale": model.clamped_logit_scale().item(),
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "images": float(pixel_values.shape[0]),
            },
        )
    return step


def training_state(model, optimizer, scheduler, step: int, positions: list[dict[str, int]]) -> dict[str, Any]:
    """Everything a resumed run needs to take the same next step: weights, optimizer, schedule, every
    worker's data position, torch's RNG. Plain tensors and builtins only (loads with weights_only)."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "positions": positions,
        "torch_rng": torch.get_rng_state(),
    }


def restore_training_state(state: dict[str, Any], model, optimizer, scheduler) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])
