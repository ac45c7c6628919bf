"""The GPU shakedown's training checks: finetune_text's loop at the recipe's settings on Llama-shaped
models, a vision loop that must learn and resume exactly, and the gathered loss over two NCCL ranks."""

from __future__ import annotations

import time

from bench.gpu_checks import (
    _random_llama,
    device_and_peak,
    peak_memory_gib,
    reset_peak,
    sync,
)
from bench.paper_shapes import LLAMA_3_2_1B, LLAMA_3_8B, TINY_LLAMA

MASK_TOKEN = "<mask>"


def word_tokenizer(vocab_size: int):
    """A tokenizer over vocab_size words ("w0" ...) with Llama's specials: token ids are all a
    random-weight model needs, and no tokenizer can be downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>", MASK_TOKEN, "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.padding_side = "right"
    return tokenizer


def _texts(generator, count: int, words: int, vocab_size: int) -> list[str]:
    import torch

    ids = torch.randint(5, vocab_size, (count, words), generator=generator)
    return [" ".join(f"w{i}" for i in row.tolist()) for row in ids]


def finetune_row(shape_name: str, shape: dict, tiny: bool, device) -> dict:
    """Two MNTP steps, then contrastive steps of finetune_text's own loop (pipelines/finetune_text/loop.py)
    at the recipe's settings: LoRA r16 / alpha 32 / dropout 0.05, bf16 autocast, gradient checkpointing,
    64 pairs per worker (short query ~30 tokens, dense key ~200 tokens, one random negative), 512 max."""
    import torch

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_config import LoraSpec, TextEncoderConfig
    from models.text_encoder_io import apply_lora, enable_gradient_checkpointing
    from pipelines.finetune_text.loop import (
        LoopSettings,
        MntpSettings,
        build_optimizer,
        mntp_steps,
        train_steps,
    )

    batch, steps, query_words, key_words = (4, 2, 8, 24) if tiny else (64, 4, 30, 200)
    vocab = shape["vocab_size"]
    tokenizer = word_tokenizer(vocab)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    generator = torch.Generator().manual_seed(0)
    reset_peak(device)
    causal = _random_llama(shape, device, causal=True)
    enable_gradient_checkpointing(causal)
    lora = LoraSpec(rank=16, alpha=32, dropout=0.05)
    mntp_model = apply_lora(causal, lora)
    mntp = MntpSettings(
        steps=2, learning_rate=5e-5, mask_probability=0.2, mask_token=MASK_TOKEN, max_length=512, seed=0
    )
    began = time.perf_counter()
    mntp_steps(
        mntp_model,
        tokenizer,
        iter([_texts(generator, batch, key_words, vocab)] * 2),
        mntp,
        lambda s, m: None,
        device,
        autocast,
    )
    sync(device)
    mntp_s = (time.perf_counter() - began) / 2
    mntp_peak = peak_memory_gib(device)
    backbone = mntp_model.merge_and_unload().get_decoder()
    del mntp_model, causal
    reset_peak(device)
    encoder = LLMTextEncoder(apply_lora(backbone, lora), TextEncoderConfig(max_length=512)).to(device)
    settings = LoopSettings(0.02, 2e-4, 0.0, 1, steps + 1, 1.0, 0)
    optimizer, scheduler = build_optimizer(encoder, settings)
    batches = [
        {
            "query_side": _texts(generator, batch, query_words, vocab),
            "key_side": _texts(generator, batch, key_words, vocab),
            "hard_negative": _texts(generator, batch, key_words, vocab),
        }
        for _ in range(steps + 1)
    ]
    losses, times = [], []

    def on_step(step: int, metrics: dict) -> None:
        sync(device)
        times.append(time.perf_counter())
        losses.append(metrics["loss"])

    times.append(time.perf_counter())
    train_steps(encoder, tokenizer, batches, settings, optimizer, scheduler, 0, on_step, device, autocast)
    step_s = (times[-1] - times[1]) / max(1, len(times) - 2)  # the first step warms up
    memory = peak_memory_gib(device)
    total = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    return {
        "name": f"finetune_text, {shape_name}, {batch} pairs/worker, LoRA r16, bf16, checkpointing",
        "step_s": round(step_s, 3),
        "mntp_step_s": round(mntp_s, 3),
        "peak_memory_gib": memory,
        "mntp_peak_memory_gib": mntp_peak,
        "fits": None if total is None else max(memory or 0, mntp_peak or 0) < 0.95 * total,
        "losses": [round(x, 4) for x in losses],
    }


def check_finetune(tiny: bool) -> dict:
    device, name, _ = device_and_peak(tiny)
    shapes = (
        [("tiny Llama", TINY_LLAMA)]
        if tiny
        else [("Llama-3.2-1B shape", LLAMA_3_2_1B), ("Llama-3-8B shape", LLAMA_3_8B)]
    )
    rows, notes = [], [f"{name}; random weights in bf16 (as transformers loads Llama-3's bf16 checkpoints)"]
    for shape_name, shape in shapes:
        try:
            rows.append(finetune_row(shape_name, shape, tiny, device))
        except Exception as error:  # an 8B run out of memory is a finding, not a crash of the check
            rows.append(
                {"name": f"finetune_text, {shape_name}", "error": f"{type(error).__name__}: {error}"[:300]}
            )
        import gc

        import torch

        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    failed = any("error" in row and "OutOfMemory" not in row["error"] for row in rows)
    return {"status": "failed" if failed else "ok", "rows": rows, "notes": notes}
