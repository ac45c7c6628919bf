"""The llm2vec preset reproduces the official LLM2CLIP text encoders' embedding (LLM2Vec's mean pooling
over the Llama-3 user turn, left padding, not normalised, float32), checked against LLM2Vec's pooling
written out here; an LLM2Vec-format folder (auto_map to remote code it does not ship) loads without it."""

from __future__ import annotations

import pytest
import torch

from models.text_encoder import build_text_inputs
from models.text_encoder_config import LLAMA3_USER_TURN, TextEncoderConfig
from models.text_encoder_io import open_text_encoder
from testbed.official_layout import write_llm2vec_folder

CAPTIONS = [
    "a blue square ",  # trailing space: LLM2Vec strips it
    "A large red circle is in the top left. The red circle is above the blue square.",
    "a green triangle",
]
SEPARATOR = "!@#$%^&*()"  # LLM2Vec's marker between instruction and text


def llm2vec_reference(model, tokenizer, texts: list[str], instruction: str = "") -> torch.Tensor:
    """LLM2Vec.encode for a Llama-3 Instruct model, pooling_mode mean, skip_instruction, max_length 512,
    as its source does it: join, wrap and strip, split at the separator, tokenize left-padded, count the
    tail's tokens alone, mean the last that many hidden states; a bidirectional model's additive mask."""
    joined = [f"{instruction.strip()} {SEPARATOR}{t}" if instruction else f"{SEPARATOR}{t}" for t in texts]
    wrapped = ["<|start_header_id|>user<|end_header_id|>\n\n" + j.strip() + "<|eot_id|>" for j in joined]
    originals = ["".join(w.split(SEPARATOR)) for w in wrapped]
    tails = [w.split(SEPARATOR)[1] for w in wrapped]
    tokenizer.padding_side = "left"
    batch = tokenizer(originals, return_tensors="pt", padding=True, truncation=True, max_length=512)
    tokenizer.padding_side = "right"
    counts = [
        len(tokenizer([t], truncation=True, max_length=512, add_special_tokens=False)["input_ids"][0])
        for t in tails
    ]
    keys = batch["attention_mask"][:, None, None, :].float()
    length = keys.shape[-1]
    additive = ((1.0 - keys) * torch.finfo(torch.float32).min).expand(-1, 1, length, length)
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=additive).last_hidden_state
    return torch.stack([hidden[i, -n:, :].mean(dim=0) for i, n in enumerate(counts)]).to(torch.float32)


@pytest.fixture(scope="module")
def llm2vec_folder(tmp_path_factory):
    return write_llm2vec_folder(tmp_path_factory.mktemp("llm2vec"))


def test_preset_equals_llm2vec_pooling(llm2vec_folder):
    folder, model, tokenizer = llm2vec_folder
    encoder, loaded_tokenizer = open_text_encoder(str(folder), "llm2vec")
    assert type(encoder.backbone).__name__ == "LlamaModel"  # no remote code: the folder has none
    assert encoder.config == TextEncoderConfig.llm2vec()

    ours = encoder.encode(loaded_tokenizer, CAPTIONS, batch_size=len(CAPTIONS))
    reference = llm2vec_reference(model, tokenizer, CAPTIONS)
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(ours.norm(dim=-1), torch.ones(len(CAPTIONS)))  # not normalised

    for instruction in ("Caption:", "  "):  # LLM2Vec strips a whitespace-only one away
        instructed = TextEncoderConfig(pooling="llm2vec", template=LLAMA3_USER_TURN, instruction=instruction)
        encoder_with_instruction = type(encoder)(encoder.backbone, instructed)
        torch.testing.assert_close(
            encoder_with_instruction.encode(loaded_tokenizer, CAPTIONS, batch_size=len(CAPTIONS)),
            llm2vec_reference(model, tokenizer, CAPTIONS, instruction=instruction),
            atol=1e-6,
            rtol=1e-6,
        )


def test_preset_pools_the_caption_and_eot_only(llm2vec_folder):
    folder, _, _ = llm2vec_folder
    encoder, tokenizer = open_text_encoder(str(folder), "llm2vec")
    inputs = build_text_inputs(tokenizer, CAPTIONS[:2], encoder.config)
    assert inputs["attention_mask"][0, 0] == 0 and inputs["attention_mask"][:, -1].all()  # left padding
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    for row, caption in enumerate(CAPTIONS[:2]):
        pooled = inputs["input_ids"][row][inputs["pool_mask"][row].bool()].tolist()
        assert pooled[-1] == eot
        assert tokenizer.decode(pooled[:-1]) == caption.rstrip()  # no BOS, no header
    # Padding shifts the positions of a short caption; RoPE sees only their differences.
    alone = encoder.encode(tokenizer, CAPTIONS[:1])
    beside_a_long_one = encoder.encode(tokenizer, CAPTIONS[:2], batch_size=2)[:1]
    torch.testing.assert_close(alone, beside_a_long_one, atol=1e-4, rtol=1e-4)


def test_template_is_checked():
    with pytest.raises(ValueError, match="template"):
        TextEncoderConfig(pooling="llm2vec", template="no placeholder")
    with pytest.raises(ValueError, match="template"):
        TextEncoderConfig(template=LLAMA3_USER_TURN)  # a template without llm2vec pooling
    with pytest.raises(ValueError, match="encoder preset"):
        open_text_encoder("anything", "sentence-transformers")
