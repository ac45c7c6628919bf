"""Next-token pretraining of the tiny Llama on the generated corpus: blocks are packed exactly, the
validation loss falls, and the same seed gives the same model."""

from __future__ import annotations

import itertools

import torch

from demo.lm_corpus import LmCorpusConfig, documents, vocabulary_lines
from experiments.lm_pretrain.loop import PretrainSettings, batches, mean_loss, packed_blocks, pretrain
from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
from models.tiny_specs import TinyLlmSpec

SETTINGS = PretrainSettings(
    max_steps=120,
    batch_size=8,
    seq_len=64,
    learning_rate=3e-3,
    weight_decay=0.01,
    warmup_steps=5,
    max_grad_norm=1.0,
    eval_every_steps=60,
    eval_batches=2,
)


def _tokenizer():
    corpus = vocabulary_lines() + list(
        itertools.islice(documents(LmCorpusConfig(), "train", frozenset()), 300)
    )
    return train_scene_tokenizer(corpus, 1024)


def _run(tokenizer):
    model = build_tiny_llm(tokenizer, TinyLlmSpec(hidden_size=64, intermediate_size=128), seed=0)
    stream = documents(LmCorpusConfig(), "validation", frozenset())
    validation = list(itertools.islice(batches(packed_blocks(stream, tokenizer, 64), 8), 2))
    before = mean_loss(model, validation)
    logged: list[tuple[int, dict]] = []
    train = batches(packed_blocks(documents(LmCorpusConfig(), "train", frozenset()), tokenizer, 64), 8)
    result = pretrain(model, train, validation, SETTINGS, lambda step, m: logged.append((step, m)))
    return model, before, result, logged


def test_blocks_are_packed_to_the_exact_length_with_eos_between_documents():
    tokenizer = _tokenizer()
    blocks = list(
        itertools.islice(packed_blocks(["a red circle", "two plus two is four"] * 50, tokenizer, 16), 5)
    )
    assert all(len(b) == 16 for b in blocks)
    flat = [t for b in blocks for t in b]
    assert tokenizer.eos_token_id in flat and tokenizer.bos_token_id in flat


def test_pretraining_lowers_validation_loss_and_is_reproducible():
    tokenizer = _tokenizer()
    model, before, result, logged = _run(tokenizer)
    assert [s for s, m in logged if "validation_perplexity" in m] == [60, 120]
    assert len(logged) == 120
    # From a uniform guess over the vocabulary to a language model of the small world.
    assert result["final_validation_loss"] < 0.5 * before, (before, result)
    again, _, result_again, _ = _run(tokenizer)
    assert result_again == result
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
