from __future__ import annotations

import torch

from demo.basic_scenes import vocabulary_corpus
from models.text_encoder import LLMTextEncoder
from models.text_encoder_config import LoraSpec, TextEncoderConfig
from models.text_encoder_io import apply_lora, load_text_encoder, save_text_encoder
from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
from models.tiny_specs import TinyLlmSpec

TEXTS = ["a red circle", "A small blue square is in the center. The blue square is below the red circle."]


def test_lora_trains_a_small_share_and_the_merged_folder_reloads_identically(tmp_path):
    tokenizer = train_scene_tokenizer(vocabulary_corpus(), vocab_size=1024)
    backbone = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0).model
    config = TextEncoderConfig(instruction="Caption: ", max_length=64)
    base = LLMTextEncoder(backbone, config).encode(tokenizer, TEXTS)

    peft_backbone = apply_lora(backbone, LoraSpec(rank=4, alpha=8))
    trainable = sum(p.numel() for p in peft_backbone.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_backbone.parameters())
    assert 0 < trainable < total * 0.2
    with torch.no_grad():  # as if trained: LoRA's B matrices start at zero
        for name, parameter in peft_backbone.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    encoder = LLMTextEncoder(peft_backbone, config).eval()
    tuned = encoder.encode(tokenizer, TEXTS)
    assert not torch.allclose(base, tuned, atol=1e-3)

    save_text_encoder(encoder, tokenizer, tmp_path / "encoder")
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    assert not list((tmp_path / "encoder").glob("*.bin"))
    loaded, loaded_tokenizer = load_text_encoder(tmp_path / "encoder")
    assert loaded.config == config
    assert torch.allclose(loaded.encode(loaded_tokenizer, TEXTS), tuned, atol=1e-5)


def test_gradient_checkpointing_keeps_the_lora_gradients():
    import torch

    from demo.basic_scenes import vocabulary_corpus
    from models.text_encoder import LLMTextEncoder, build_text_inputs
    from models.text_encoder_config import LoraSpec, TextEncoderConfig
    from models.text_encoder_io import apply_lora, enable_gradient_checkpointing
    from models.tiny_factory import build_tiny_llm, train_scene_tokenizer
    from models.tiny_specs import TinyLlmSpec
    from ops.contrastive import info_nce_loss

    tokenizer = train_scene_tokenizer(vocabulary_corpus(), vocab_size=1024)
    tokenizer.padding_side = "right"
    texts = ["a red circle", "a blue square on a white background", "photo of a green star"]
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        backbone = build_tiny_llm(tokenizer, TinyLlmSpec(), seed=0).model
        if checkpointing:
            enable_gradient_checkpointing(backbone)
        encoder = LLMTextEncoder(
            apply_lora(backbone, LoraSpec(rank=4, alpha=8, dropout=0.0)), TextEncoderConfig()
        )
        encoder.train()
        inputs = build_text_inputs(tokenizer, texts, encoder.config)
        loss = info_nce_loss(encoder(**inputs), encoder(**inputs), 0.05)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1]) and any(g.abs().sum() > 0 for g in grads[1].values())
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-5), name
