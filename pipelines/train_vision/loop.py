"""The LLM2CLIP vision training loop, free of Ray: symmetric CLIP loss between the vision tower's
features and the adapter's features of precomputed LLM embeddings, gathered across workers when a
process group is up. Runs in one process (tests, bench) or per Ray Train worker."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from models.llm2clip import MAX_LOGIT_SCALE, LLM2CLIPModel
from ops.clip_loss import clip_loss
from ops.distributed import average_gradients, gather_with_grad, rank_and_world
from ops.image_transforms import CLIP_MEAN, CLIP_STD, normalize_pixels
from ops.master_weights import MasterWeights
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
    bf16_weights: bool = False  # the model in bf16, the optimizer on fp32 master copies
    # uint8 batches (the loader's) are normalised with these on the step's device
    pixel_mean: tuple[float, float, float] = CLIP_MEAN
    pixel_std: tuple[float, float, float] = CLIP_STD


def to_training_precision(model: LLM2CLIPModel, settings: VisionLoopSettings) -> MasterWeights | None:
    """With bf16_weights, the fp32 master copies of the trainable weights (taken before the model is cast
    to bf16, so they start exact); None otherwise, and the model stays as it is."""
    if not settings.bf16_weights:
        return None
    master = MasterWeights(model)
    model.to(torch.bfloat16)  # in place: the parameters stay the same objects, so the pairs hold
    return master


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


def for_export(model: LLM2CLIPModel, master: MasterWeights | None) -> LLM2CLIPModel:
    """The trained model as it is saved: on CPU, in eval mode, and in fp32 with the master copies' values
    when it trained with bf16 weights (not their bf16 rounding)."""
    model = model.cpu().eval()
    if master:
        model.float()
        master.write_back()
    return model


def build_optimizer(model: LLM2CLIPModel, settings: VisionLoopSettings, master: MasterWeights | None = None):
    """AdamW with layer-wise lr decay over the vision tower; no weight decay on biases, norms and the
    logit scale; cosine schedule with linear warmup. With `master`, it steps the fp32 master copies."""
    num_layers = model.vision_model.config.num_hidden_layers
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in (master or model).named_parameters():
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


@torch.no_grad()
def clamp_logit_scale(model: LLM2CLIPModel, master: MasterWeights | None = None) -> None:
    """The logit scale itself held in [0, ln 100] after each step, as open_clip and the LLM2CLIP release
    do (not only its exponential in the forward: a parameter past the clamp gets no gradient back)."""
    parameter = dict(master.named_parameters())["logit_scale"] if master else model.logit_scale
    parameter.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def step_loss(model: LLM2CLIPModel, pixel_values: torch.Tensor, llm_embeddings: torch.Tensor) -> torch.Tensor:
    """This worker's share of the global CLIP loss: local rows against every worker's rows."""
    rank, _ = rank_and_world()
    out = model(pixel_values=pixel_values, llm_embeddings=llm_embeddings)
    # fp32 from here on (a no-op for an fp32 model): bf16 weights give bf16 features
    image, text = out["image_embeds"].float(), out["text_embeds"].float()
    return clip_loss(
        image,
        text,
        out["logit_scale"].float(),
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
    master: MasterWeights | None = None,
) -> int:
    """Optimise until max_steps; on_step(step, metrics) after each step (logging, checkpoints, eval).
    With `master` (bf16 weights), gradients are averaged, clipped and applied in fp32 on the copies."""
    model.train()
    step = start_step
    trainable = master.parameters() if master else [p for p in model.parameters() if p.requires_grad]
    iterator = iter(batches)
    while step < settings.max_steps:  # checked before drawing: an unused batch would move the data position
        drawn = next(iterator, None)
        if drawn is None:
            break
        pixel_values, llm_embeddings = drawn
        pixel_values = pixel_values.to(device, non_blocking=True)
        if pixel_values.dtype == torch.uint8:
            pixel_values = normalize_pixels(pixel_values, settings.pixel_mean, settings.pixel_std)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = step_loss(model, pixel_values, llm_embeddings.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if master:
            master.take_gradients()
        average_gradients(trainable)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        clamp_logit_scale(model, master)
        if master:
            master.write_back()
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


def training_state(
    model,
    optimizer,
    scheduler,
    step: int,
    positions: list[dict[str, int]],
    master: MasterWeights | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs to take the same next step: weights (and their fp32 master copies),
    optimizer, schedule, every worker's data position, torch's RNG. Plain tensors and builtins only
    (loads with weights_only)."""
    extra = {"master": master.state_dict()} if master else {}
    return {
        **extra,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "positions": positions,
        "torch_rng": torch.get_rng_state(),
    }


def restore_training_state(
    state: dict[str, Any], model, optimizer, scheduler, master: MasterWeights | None = None
) -> int:
    model.load_state_dict(state["model"])
    if master:
        if "master" not in state:
            raise ValueError("train_vision: bf16_weights is set but the checkpoint has no master weights")
        master.load_state_dict(state["master"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])
