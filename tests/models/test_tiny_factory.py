from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    CLIPVisionModel,
    Idefics3ForConditionalGeneration,
)

from demo.basic_scenes import vocabulary_corpus
from models.tiny_factory import IMAGE_TOKENS, build_tiny_llm, train_scene_tokenizer
from models.tiny_specs import TinyLlmSpec, TinyVisionSpec
from ops.config_schema import ConfigError


@pytest.fixture(scope="module")
def tokenizer():
    return train_scene_tokenizer(vocabulary_corpus(), vocab_size=1024)


def test_tokenizer_round_trips_scene_text_compactly(tokenizer):
    text = "A large purple triangle is in the bottom right. The red circle is above the blue square."
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # Trained on the scene language: its words are whole tokens, far fewer than bytes.
    assert len(ids) < len(text.split()) * 2
    # Byte-level: text outside the scene language still round-trips.
    assert tokenizer.decode(tokenizer("Zürich 東京").input_ids, skip_special_tokens=True) == "Zürich 東京"


def test_image_tokens_are_single_special_tokens(tokenizer):
    for token in (*IMAGE_TOKENS, "<row_6_col_6>"):
        ids = tokenizer(token, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id


def test_same_seed_same_weights(tokenizer):
    a = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=3)
    b = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=3)
    c = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_specs_reject_what_vllm_cpu_cannot_run():
    with pytest.raises(ConfigError, match="head_dim"):
        TinyLlmSpec(head_dim=16)
    with pytest.raises(ConfigError, match="image_size_px"):
        TinyVisionSpec(image_size_px=60, patch_size_px=16)


def test_saved_folders_load_with_safetensors_only(tiny_models_dir):
    for name in ("llm", "captioner", "vision"):
        folder = tiny_models_dir / name
        assert (folder / "model.safetensors").is_file()
        assert not list(folder.glob("*.bin")), "weights must be safetensors, never pickles"
    tok = AutoTokenizer.from_pretrained(tiny_models_dir / "llm")
    llm = AutoModelForCausalLM.from_pretrained(tiny_models_dir / "llm")
    batch = tok(
        ["a red circle", "a large blue square on a gray background"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        logits = llm(**batch).logits
    assert logits.shape == (2, batch.input_ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_saved_captioner_generates_from_an_image(tiny_models_dir):
    folder = tiny_models_dir / "captioner"
    processor = AutoProcessor.from_pretrained(folder)
    model = Idefics3ForConditionalGeneration.from_pretrained(folder)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[Image.new("RGB", (96, 96), (200, 40, 40))], return_tensors="pt")
    assert (inputs.input_ids == model.config.image_token_id).sum() == processor.image_seq_len
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == inputs.input_ids.shape[1] + 6


def test_saved_vision_tower_embeds_images(tiny_models_dir):
    folder = tiny_models_dir / "vision"
    processor = AutoImageProcessor.from_pretrained(folder)
    tower = CLIPVisionModel.from_pretrained(folder)
    pixels = processor([Image.new("RGB", (96, 96), (0, 0, 255))] * 2, return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, 64, 64)
    with torch.no_grad():
        pooled = tower(pixel_values=pixels).pooler_output
    assert pooled.shape == (2, tower.config.hidden_size)
