"""The training loop without Ray (the path a GPU check uses): loss falls, CRA rises over the base."""

from __future__ import annotations

import math
import random

import pyarrow as pa
import torch

from demo import basic_scenes as scenes
from models.text_encoder import LLMTextEncoder
from models.text_encoder_config import LoraSpec, TextEncoderConfig
from models.text_encoder_io import apply_lora
from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
from models.tiny_specs import TinyLlmSpec
from ops.retrieval_metrics import caption_retrieval_accuracy
from pipelines.finetune_text.batches import pair_batches
from pipelines.finetune_text.loop import LoopSettings, build_optimizer, train_steps
from pipelines.finetune_text.pairs import training_pairs


def _pairs(split: str, count: int) -> list[dict[str, str]]:
    rows = []
    for i in range(count):
        rng = random.Random(scenes.scene_seed(0, split, i))
        scene = scenes.sample_scene(rng, scenes.scene_key(split, i), 4)
        rows.append({"caption_1": scenes.short_caption(scene, rng), "caption_2": scenes.dense_caption(scene)})
    return rows


def _tiny_llm():
    """(tokenizer, backbone, encoder config): the demo's tiny Llama, seeded."""
    torch.manual_seed(0)
    tokenizer = train_scene_tokenizer(scenes.vocabulary_corpus(), 1024)
    tokenizer.padding_side = "right"
    backbone = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0).model
    return tokenizer, backbone, TextEncoderConfig(max_length=160)


def _settings(warmup_steps: int, max_steps: int) -> LoopSettings:
    return LoopSettings(
        temperature=0.05,
        learning_rate=2e-3,
        weight_decay=0.0,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        max_grad_norm=1.0,
        seed=0,
    )


def _train(encoder, tokenizer, rows, settings: LoopSettings) -> tuple[int, list[float]]:
    """(last step, per-step losses) of LoRA training on `rows`, batches of 32."""
    optimizer, scheduler = build_optimizer(encoder, settings)
    losses: list[float] = []
    batches = pair_batches(pa.Table.from_pylist(rows), 32, rank=0, world=1, seed=0)
    last = train_steps(
        encoder,
        tokenizer,
        batches,
        settings,
        optimizer,
        scheduler,
        0,
        lambda s, m: losses.append(m["loss"]),
        torch.device("cpu"),
    )
    return last, losses


def test_single_process_loop_lowers_loss_and_raises_cra():
    tokenizer, backbone, config = _tiny_llm()
    held_out = _pairs("eval", 64)

    def cra(encoder):
        first = encoder.encode(tokenizer, [r["caption_1"] for r in held_out])
        return caption_retrieval_accuracy(
            first, encoder.encode(tokenizer, [r["caption_2"] for r in held_out])
        )

    base_cra = cra(LLMTextEncoder(backbone, config).eval())
    encoder = LLMTextEncoder(apply_lora(backbone, LoraSpec(rank=16, alpha=32, dropout=0.0)), config)
    last, losses = _train(encoder, tokenizer, _pairs("train", 256), _settings(warmup_steps=5, max_steps=60))
    assert last == 60 == len(losses)
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5
    tuned_cra = cra(encoder.eval())
    assert tuned_cra > base_cra + 0.3, (base_cra, tuned_cra)


def test_hard_negatives_enter_the_loss_and_training_still_converges():
    tokenizer, backbone, config = _tiny_llm()
    encoder = LLMTextEncoder(apply_lora(backbone, LoraSpec(rank=16, alpha=32, dropout=0.0)), config)
    images = pa.Table.from_pylist(_pairs("train", 128)).rename_columns(["original", "dense"])
    images = images.append_column("key", pa.array([str(i) for i in range(images.num_rows)]))
    rows = training_pairs(images, "mined").drop_columns(["key", "kind"]).to_pylist()
    assert set(rows[0]) == {"caption_1", "caption_2", "hard_negative_1", "hard_negative_2"}
    _, losses = _train(encoder, tokenizer, rows, _settings(warmup_steps=3, max_steps=24))
    # 32 in-batch keys + 32 hard negatives: chance is ln(64), above the in-batch-only ln(32)
    assert losses[0] > math.log(48)
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4, losses
