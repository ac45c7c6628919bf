from __future__ import annotations

import pytest
import torch

from demo.basic_scenes import vocabulary_corpus
from models.text_encoder import LLMTextEncoder, build_text_inputs
from models.text_encoder_config import TextEncoderConfig
from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
from models.tiny_specs import TinyLlmSpec

SHORT = "a blue square"
LONG = "A large red circle is in the top left. The red circle is above the blue square."


@pytest.fixture(scope="module")
def parts():
    tokenizer = train_scene_tokenizer(vocabulary_corpus(), vocab_size=1024)
    backbone = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0).model
    return tokenizer, backbone


def test_pooling_ignores_padding(parts):
    tokenizer, backbone = parts
    encoder = LLMTextEncoder(backbone, TextEncoderConfig())
    alone = encoder.encode(tokenizer, [SHORT])
    padded = encoder.encode(tokenizer, [LONG, SHORT])
    assert build_text_inputs(tokenizer, [LONG, SHORT], encoder.config)["attention_mask"][1].min() == 0
    assert torch.allclose(alone[0], padded[1], atol=1e-5)
    assert torch.allclose(padded.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_bidirectional_attention_changes_early_tokens_only_when_on(parts):
    tokenizer, backbone = parts
    inputs = build_text_inputs(tokenizer, [LONG], TextEncoderConfig())
    with torch.no_grad():
        causal = backbone(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        from models.text_encoder import bidirectional_mask

        both = backbone(
            input_ids=inputs["input_ids"], attention_mask=bidirectional_mask(inputs["attention_mask"])
        ).last_hidden_state
    assert (causal[0, 1] - both[0, 1]).abs().max() > 1e-3  # an early token now sees what follows
    on = LLMTextEncoder(backbone, TextEncoderConfig(bidirectional=True)).encode(tokenizer, [LONG])
    off = LLMTextEncoder(backbone, TextEncoderConfig(bidirectional=False)).encode(tokenizer, [LONG])
    assert not torch.allclose(on, off, atol=1e-4)


def test_instruction_and_bos_are_not_pooled_and_the_caption_is_whole(parts):
    """By character offsets: "Caption: " alone ends in a space token, but beside the caption the space
    joins its first word (" a"); counting the instruction's tokens alone dropped that word."""
    tokenizer, _ = parts
    for instruction in ("Caption: ", "Caption:", "describe "):
        inputs = build_text_inputs(tokenizer, [SHORT, LONG], TextEncoderConfig(instruction=instruction))
        for row, caption in enumerate((SHORT, LONG)):
            pooled = inputs["input_ids"][row][inputs["pool_mask"][row].bool()].tolist()
            assert tokenizer.decode(pooled).strip() == caption, instruction
            assert tokenizer.bos_token_id not in pooled
    plain = build_text_inputs(tokenizer, [SHORT], TextEncoderConfig())
    assert plain["input_ids"][0, 0] == tokenizer.bos_token_id and plain["pool_mask"][0, 0] == 0
    assert tokenizer.decode(plain["input_ids"][0][plain["pool_mask"][0].bool()].tolist()).strip() == SHORT


def test_truncation_respects_max_length(parts):
    tokenizer, backbone = parts
    config = TextEncoderConfig(max_length=8)
    inputs = build_text_inputs(tokenizer, [LONG * 5], config)
    assert inputs["input_ids"].shape[1] == 8 and inputs["pool_mask"].sum() == 7
    assert LLMTextEncoder(backbone, config).encode(tokenizer, [LONG * 5]).shape == (1, 128)
