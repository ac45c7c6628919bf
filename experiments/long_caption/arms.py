"""The long-caption experiment's four arms, each trained identically:

  llm2clip  the vision tower meets the caption-contrastively fine-tuned LLM's features through the adapter
  base_llm  the same, on the base LLM's features (no caption-contrastive fine-tuning)
  clip_77   CLIP as trained originally: a text transformer trained jointly, captions cut at 77 tokens
  clip_long the same text transformer with the whole caption: separates "length" from "LLM"

Every arm sees the same images, the same batch order and the same original/dense draw for a given seed,
and the same optimizer and schedule; only the text side differs. The LLM arms train through train_vision's
production step (pipelines/train_vision/loop.py: train_steps, the loss, clipping, logit-scale clamp and
schedule a real run uses), fed from memory; the text-tower arms, which train a text transformer too, run
a loop of their own built from the same optimizer, schedule, loss and clamp.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from experiments.long_caption.report import KINDS
from models.llm2clip import LLM2CLIPConfig, LLM2CLIPModel
from models.text_tower_clip import TextTowerCLIP, TextTowerSpec
from ops.clip_loss import clip_loss
from ops.retrieval_metrics import image_text_recalls, top1_hits
from pipelines.train_vision.loop import VisionLoopSettings, build_optimizer, clamp_logit_scale, train_steps

TEXT_TOWER_ARMS = ("clip_77", "clip_long")
RECALL_KS = (1, 5)


@dataclasses.dataclass
class CaptionedImages:
    """Pixels and, per caption kind ('short', 'long', and 'l2' where the second language's dense captions
    exist), whatever each arm's text side takes."""

    pixels: torch.Tensor  # [n, 3, size, size]
    llm_features: dict[str, dict[str, torch.Tensor]]  # encoder name -> kind -> [n, dim]
    # text-tower arm -> kind -> {"input_ids", "attention_mask"}, [n, that arm's max_tokens]
    tokens: dict[str, dict[str, dict[str, torch.Tensor]]]

    def __len__(self) -> int:
        return self.pixels.shape[0]


@dataclasses.dataclass(frozen=True)
class ArmSettings:
    max_steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    max_grad_norm: float
    dense_ratio: float
    adapter_width: int
    adapter_depth: int
    projection_dim: int
    text_tower: TextTowerSpec  # clip_77's; clip_long's differs only in max_tokens
    clip_long_max_tokens: int

    def tower_spec(self, arm: str) -> TextTowerSpec:
        if arm == "clip_long":
            return dataclasses.replace(self.text_tower, max_tokens=self.clip_long_max_tokens)
        return self.text_tower


def build_arm(arm: str, vision_tower, data: CaptionedImages, settings: ArmSettings, tokenizer, seed: int):
    """A fresh model for the arm: the vision tower's starting weights, other layers seeded."""
    torch.manual_seed(seed)
    if arm in TEXT_TOWER_ARMS:
        model = TextTowerCLIP(
            vision_tower.config,
            len(tokenizer),
            {
                "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
            },
            settings.tower_spec(arm),
            settings.projection_dim,
        )
        model.vision_model.load_state_dict(vision_tower.state_dict())
        return model
    encoder = "finetuned" if arm == "llm2clip" else "base"
    config = LLM2CLIPConfig(
        llm_dim=data.llm_features[encoder]["short"].shape[1],
        adapter_width=settings.adapter_width,
        adapter_depth=settings.adapter_depth,
        projection_dim=settings.projection_dim,
    )
    return LLM2CLIPModel.with_vision_tower(config, vision_tower)


def text_features(
    arm: str, model, data: CaptionedImages, index: torch.Tensor, dense: torch.Tensor, long_kind: str = "long"
) -> torch.Tensor:
    """The arm's text features for rows `index`: the `long_kind` caption where `dense` is set, the short
    one elsewhere."""
    if arm in TEXT_TOWER_ARMS:
        # Short and long captions go through the tower apart, each cut to its own longest caption: one
        # batch padded to the long width would spend about half the tower's compute on padding.
        tokens, parts, rows = data.tokens[arm], [], []
        for chosen, kind in ((~dense, "short"), (dense, long_kind)):
            where = chosen.nonzero().squeeze(1)
            if len(where) == 0:
                continue
            ids, mask = (tokens[kind][name][index[where]] for name in ("input_ids", "attention_mask"))
            width = int(mask.sum(dim=1).max())
            parts.append(model.get_text_features(ids[:, :width], mask[:, :width]))
            rows.append(where)
        return torch.cat(parts)[torch.argsort(torch.cat(rows))]
    encoder = "finetuned" if arm == "llm2clip" else "base"
    features = data.llm_features[encoder]
    return model.get_text_features(
        torch.where(dense[:, None], features[long_kind][index], features["short"][index])
    )


def batch_plan(size: int, settings: ArmSettings, seed: int):
    """Each step's (rows, dense): epochs of a seeded permutation, and which rows take the long caption.
    The same for every arm of a seed."""
    generator = torch.Generator().manual_seed(seed)
    batch = min(settings.batch_size, size)
    order, position = torch.randperm(size, generator=generator), 0
    for _ in range(settings.max_steps):
        if position + batch > size:
            order, position = torch.randperm(size, generator=generator), 0
        index = order[position : position + batch]
        position += batch
        yield index, torch.rand(batch, generator=generator) < settings.dense_ratio


def train_arm(arm: str, model, data: CaptionedImages, settings: ArmSettings, seed: int) -> list[float]:
    """max_steps of symmetric CLIP loss over batch_plan's batches. Returns the loss per step."""
    loop = VisionLoopSettings(
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        max_steps=settings.max_steps,
        max_grad_norm=settings.max_grad_norm,
    )
    optimizer, scheduler = build_optimizer(model, loop)
    plan, losses = batch_plan(len(data), settings, seed), []
    if arm not in TEXT_TOWER_ARMS:
        features = data.llm_features["finetuned" if arm == "llm2clip" else "base"]
        batches = (
            (
                data.pixels[index],
                torch.where(dense[:, None], features["long"][index], features["short"][index]),
            )
            for index, dense in plan
        )
        train_steps(
            model,
            batches,
            loop,
            optimizer,
            scheduler,
            0,
            lambda step, metrics: losses.append(metrics["loss"]),
            torch.device("cpu"),
        )
        return losses
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for index, dense in plan:
        image = F.normalize(model.get_image_features(data.pixels[index]), dim=-1)
        text = F.normalize(text_features(arm, model, data, index, dense), dim=-1)
        loss = clip_loss(image, text, model.clamped_logit_scale())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        optimizer.step()
        clamp_logit_scale(model)
        scheduler.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate_arm(arm: str, model, data: CaptionedImages, batch_size: int = 64) -> dict[str, float]:
    """I2T and T2I recall@k on the held-out images with each kind of caption (short, long, l2, syn), and for
    the long captions each image's I2T and T2I top-1 hit (for recall against caption length)."""
    model.eval()
    rows = torch.arange(len(data))
    image = F.normalize(
        torch.cat(
            [
                model.get_image_features(data.pixels[s : s + batch_size])
                for s in range(0, len(data), batch_size)
            ]
        ),
        dim=-1,
    )
    metrics: dict = {}
    kinds = [k for k in KINDS if k in next(iter(data.tokens.values()))]
    for kind in kinds:
        dense = torch.full((len(data),), kind != "short")
        long_kind = "long" if kind == "short" else kind
        text = F.normalize(
            torch.cat(
                [
                    text_features(
                        arm, model, data, rows[s : s + batch_size], dense[s : s + batch_size], long_kind
                    )
                    for s in range(0, len(data), batch_size)
                ]
            ),
            dim=-1,
        )
        # The strict tie rule (ops.retrieval_metrics), kept on purpose: clip_77 cuts siblings' captions to
        # the same 77 tokens, and a tie it cannot break must not count as half a hit.
        recalls = image_text_recalls(image, text, RECALL_KS, ties="strict")
        metrics.update({f"{kind}_{name}": value for name, value in recalls.items()})
        if kind == "long":
            similarity = image @ text.T  # hits count ties as misses, as the recalls do
            metrics["long_i2t_hits"] = top1_hits(similarity)
            metrics["long_t2i_hits"] = top1_hits(similarity.T)
    return metrics


def run_one(
    arm: str,
    seed: int,
    vision_tower,
    train: CaptionedImages,
    held_out: CaptionedImages,
    settings: ArmSettings,
    tokenizer,
    validation: CaptionedImages | None = None,
) -> dict:
    """One (arm, seed): the held-out recalls (and the validation ones, prefixed val_) and the mean
    training loss over the first and the last tenth of the steps."""
    model = build_arm(arm, vision_tower, train, settings, tokenizer, seed)
    losses = train_arm(arm, model, train, settings, seed)
    tail = max(1, len(losses) // 10)
    validated = (
        {
            f"val_{name}": value
            for name, value in evaluate_arm(arm, model, validation).items()
            if not name.endswith("_hits")
        }
        if validation is not None and len(validation)
        else {}
    )
    return {
        "arm": arm,
        "seed": seed,
        **evaluate_arm(arm, model, held_out),
        **validated,
        "loss_first": sum(losses[:tail]) / tail,
        "loss_last": sum(losses[-tail:]) / tail,
    }
