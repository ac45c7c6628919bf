"""Peak memory of one MNTP step (forward + backward) at a real vocabulary, on CPU: finetune_text's
mntp_loss (the LM head only at the masked positions, a chunk at a time, recomputed in backward) beside
the logits over the whole vocabulary at every position that it replaced, measured side by side in one run.

The shape: Llama-3's 128,256-token vocabulary, the recipe's 512 tokens per caption and 20% masking, with a
small hidden size (256, 2 layers) so that the logits, not the model, are what grows. Each variant runs in
a fresh process and reports its peak resident memory above the process's memory once the model and the
batch are built (ru_maxrss), so neither inherits the other's freed pages.

    python -m bench.mntp_memory [--texts 8] [--json bench/results/mntp_memory.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from bench.result import default_json, machine, write_result

VOCAB = 128_256  # Llama-3's
TOKENS = 512  # the recipe's max_length
HIDDEN, LAYERS = 256, 2
MASK_PROBABILITY = 0.2
VARIANTS = ("full vocabulary logits at every position", "mntp_loss (masked positions, chunked head)")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _one_step(variant: str, texts: int) -> dict:
    """Runs in its own process: build, note the memory, take one step, note the peak."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.mntp import IGNORE_INDEX, mntp_loss
    from models.text_encoder import bidirectional_mask

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=TOKENS,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    for name, parameter in model.named_parameters():  # as under LoRA: the LM head and embeddings frozen
        parameter.requires_grad_("layers" in name)
    ids = torch.randint(VOCAB, (texts, TOKENS))
    attention = torch.ones_like(ids)
    chosen = torch.rand(ids.shape) < MASK_PROBABILITY
    chosen[:, 0] = False
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    before = _peak_mib()
    if variant == VARIANTS[0]:
        logits = model(input_ids=ids, attention_mask=bidirectional_mask(attention)).logits
        shifted = logits[:, :-1].float()
        loss = F.cross_entropy(
            shifted.reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
        )
    else:
        loss = mntp_loss(model, ids, attention, labels)
    loss.backward()
    return {"name": variant, "peak_above_model_mib": _peak_mib() - before, "loss": loss.item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=8, help="captions per step (the recipe's: 128 per GPU)")
    parser.add_argument("--json", default=default_json("mntp_memory"))
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(_one_step(args.variant, args.texts)))
        return 0
    rows = []
    for variant in VARIANTS:
        command = [
            sys.executable,
            "-m",
            "bench.mntp_memory",
            "--texts",
            str(args.texts),
            "--variant",
            variant,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{variant}: peak {rows[-1]['peak_above_model_mib']:.0f} MiB above the model", flush=True)
    full, masked = rows
    # What the full logits cost at the recipe's step, by the same arithmetic: bf16 logits + their fp32 copy
    recipe_gb = 128 * TOKENS * VOCAB * (2 + 4) / 1e9
    result = {
        "bench": "mntp_memory",
        "machine": machine(),
        "shape": f"{args.texts} x {TOKENS} tokens, vocabulary {VOCAB}, hidden {HIDDEN}, {LAYERS} layers",
        "rows": rows,
        "ratio": masked["peak_above_model_mib"] / full["peak_above_model_mib"],
        "same_loss": abs(full["loss"] - masked["loss"]) < 1e-4,
        "recipe_full_logits_gb": recipe_gb,
    }
    print(f"ratio {result['ratio']:.3f}; same loss: {result['same_loss']}", flush=True)
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
