"""MNTP (LLM2Vec step 1): masking rules, the shifted loss, and a short run that lowers it."""

from __future__ import annotations

import random

import pytest
import torch

from demo import basic_scenes as scenes
from models.mntp import IGNORE_INDEX, mask_for_mntp, mntp_loss, resolve_mask_token_id
from models.text_encoder_config import LoraSpec
from models.text_encoder_io import apply_lora
from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
from models.tiny_specs import TinyLlmSpec
from pipelines.finetune_text.loop import MntpSettings, mntp_steps


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = train_scene_tokenizer(scenes.vocabulary_corpus(), vocab_size=1024)
    tokenizer.padding_side = "right"
    return tokenizer


def test_masking_touches_only_maskable_tokens_and_labels_only_chosen_ones():
    generator = torch.Generator().manual_seed(0)
    ids = torch.arange(1, 401).reshape(4, 100)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 80:] = False  # padding
    masked, labels = mask_for_mntp(
        ids, maskable, mask_token_id=0, probability=0.5, vocab_size=500, generator=generator
    )
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any() and not chosen[:, 80:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert 0.35 < chosen[:, 1:80].float().mean() < 0.65
    assert torch.equal(masked[~chosen], ids[~chosen])
    replaced_by_mask = (masked == 0) & chosen
    assert 0.7 < replaced_by_mask.sum() / chosen.sum() < 0.9


def test_mask_token_falls_back_to_pad_when_not_a_single_token(tokenizer):
    assert resolve_mask_token_id(tokenizer, "zzqqxx-not-a-token") == tokenizer.pad_token_id


def test_loss_is_zero_without_masked_tokens_and_mntp_steps_lower_it(tokenizer):
    torch.manual_seed(0)
    causal = apply_lora(
        build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0), LoraSpec(rank=8, alpha=16, dropout=0.0)
    )
    ids = tokenizer(["a red circle"], return_tensors="pt")
    nothing = torch.full_like(ids.input_ids, IGNORE_INDEX)
    assert mntp_loss(causal, ids.input_ids, ids.attention_mask, nothing).item() == 0.0

    rng = random.Random(0)
    captions = [scenes.dense_caption(scenes.sample_scene(rng, str(i), 3)) for i in range(64)]
    batches = (captions[i : i + 16] for _ in range(20) for i in range(0, 64, 16))
    losses: list[float] = []
    settings = MntpSettings(
        steps=40, learning_rate=3e-3, mask_probability=0.2, mask_token="_", max_length=128, seed=0
    )
    done = mntp_steps(
        causal, tokenizer, batches, settings, lambda s, m: losses.append(m["mntp_loss"]), torch.device("cpu")
    )
    assert done == 40 == len(losses)
    assert sum(losses[-8:]) / 8 < 0.92 * sum(losses[:8]) / 8, (
        losses
    )  # a steady fall; chance is ln(1024) = 6.9


def test_the_head_at_masked_positions_alone_gives_the_full_logits_loss_and_gradients(tokenizer):
    """The memory fix changes no number: the loss and the LoRA gradients equal those of logits over the
    whole vocabulary at every position, also when the masked positions span several head chunks."""
    import torch.nn.functional as F

    from models.text_encoder import bidirectional_mask

    causal = apply_lora(
        build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0), LoraSpec(rank=8, alpha=16, dropout=0.0)
    )
    rng = random.Random(1)
    captions = [scenes.dense_caption(scenes.sample_scene(rng, str(i), 3)) for i in range(6)]
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    masked, labels = mask_for_mntp(
        batch.input_ids, batch.attention_mask.bool(), 0, 0.3, len(tokenizer), torch.Generator().manual_seed(0)
    )
    trainable = [p for p in causal.parameters() if p.requires_grad]

    def gradients(loss):
        causal.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in trainable]

    logits = causal(input_ids=masked, attention_mask=bidirectional_mask(batch.attention_mask)).logits
    full = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
    expected = gradients(full)
    for chunk in (4096, 7):  # one chunk, and many
        loss = mntp_loss(causal, masked, batch.attention_mask, labels, chunk_positions=chunk)
        assert loss.item() == pytest.approx(full.item(), abs=1e-5)
        for got, want in zip(gradients(loss), expected):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
