"""LM-pretraining stage: the tiny_models stage's random-init LLM becomes a causal language model.

LLM2CLIP starts from a pretrained LLM, whose pooled features know language but tell captions apart
poorly; a random-init one is only a bag of its tokens. This stage trains the tiny Llama with next-token
prediction on the corpus of demo/lm_corpus.py (English and second-language scene descriptions, parallel
sentences, general text; no held-out scene), for a fixed number of steps, in the driver process.

Output layout:
  llm/                  LlamaForCausalLM + tokenizer, safetensors: finetune_text's base model
  corpus_sample.txt     the first documents of the training stream, to read what the model saw
  curves.png            train loss and validation perplexity by step
  pretrain.json         sizes, losses and corpus counts
A killed run starts again from step 0 (minutes on CPU); the same config and inputs give the same model.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tempfile
import time
from pathlib import Path

from demo.lm_corpus import LmCorpusConfig
from ops.config_schema import check
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec

SAMPLE_DOCUMENTS = 40


@dataclasses.dataclass(frozen=True)
class LmPretrainConfig:
    corpus: LmCorpusConfig = dataclasses.field(default_factory=LmCorpusConfig)
    max_steps: int = 600  # optimizer steps
    batch_size: int = 16  # sequences per step
    seq_len: int = 256  # tokens per sequence (documents packed end to end)
    learning_rate: float = 0.003
    weight_decay: float = 0.01
    warmup_steps: int = 30
    max_grad_norm: float = 1.0
    eval_every_steps: int = 100
    eval_batches: int = 8  # validation batches (a stream of its own) per evaluation
    seed: int = 0  # torch seed for anything random in training (the weights come from tiny_models)
    threads: int = 0  # torch intra-op threads; 0 = torch's default

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "seq_len", "eval_every_steps", "eval_batches"):
            check(getattr(self, name) > 0, name, "a positive number", getattr(self, name))
        check(self.learning_rate > 0, "learning_rate", "a positive rate", self.learning_rate)
        check(self.warmup_steps >= 0, "warmup_steps", "zero or more steps", self.warmup_steps)
        check(self.threads >= 0, "threads", "0 (default) or a thread count", self.threads)


def _curves_png(history: list[tuple[int, dict[str, float]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ops.plots import png_bytes

    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.plot([s for s, _ in history], [m["train_loss"] for _, m in history], lw=0.8)
    left.set(xlabel="step", ylabel="train loss (nats/token)", title="next-token loss")
    points = [(s, m["validation_perplexity"]) for s, m in history if "validation_perplexity" in m]
    right.plot([s for s, _ in points], [p for _, p in points], marker="o")
    right.set(xlabel="step", ylabel="perplexity", title="validation perplexity", yscale="log")
    figure.tight_layout()
    return png_bytes(figure)


def run_lm_pretrain(config: LmPretrainConfig, ctx: StageContext) -> StageOutcome:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from demo.lm_corpus import CorpusStats, documents
    from demo.scenes.table import held_out_captions
    from experiments.lm_pretrain.loop import PretrainSettings, batches, mean_loss, packed_blocks, pretrain

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    held_out = held_out_captions(ctx.inputs["scenes"])
    with ctx.inputs["tiny_models"].local_copy("llm") as folder:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    settings = PretrainSettings(
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        eval_every_steps=config.eval_every_steps,
        eval_batches=config.eval_batches,
    )
    stats = CorpusStats()
    train_stream = documents(config.corpus, "train", held_out, stats)
    sample = list(itertools.islice(documents(config.corpus, "train", held_out), SAMPLE_DOCUMENTS))
    validation_blocks = packed_blocks(
        documents(config.corpus, "validation", held_out), tokenizer, config.seq_len
    )
    validation = list(itertools.islice(batches(validation_blocks, config.batch_size), config.eval_batches))
    initial_loss = mean_loss(model, validation)
    history: list[tuple[int, dict[str, float]]] = []

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        history.append((step, metrics))
        ctx.log_metrics(metrics, step)
        if "validation_perplexity" in metrics:
            print(
                f"[lm_pretrain] step {step}/{config.max_steps}: train loss {metrics['train_loss']:.3f}, "
                f"validation perplexity {metrics['validation_perplexity']:.2f}",
                flush=True,
            )

    train_blocks = batches(packed_blocks(train_stream, tokenizer, config.seq_len), config.batch_size)
    losses = pretrain(model, train_blocks, validation, settings, on_metrics)

    with ctx.artifact.local_dir("llm") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    ctx.artifact.write_bytes_atomic("corpus_sample.txt", "\n\n".join(sample).encode())
    png = _curves_png(history)
    ctx.artifact.write_bytes_atomic("curves.png", png)
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "curves.png").write_bytes(png)
        ctx.log_file(str(Path(scratch) / "curves.png"))
    tokens_seen = config.max_steps * config.batch_size * config.seq_len
    summary = {
        "initial_validation_perplexity": math.exp(initial_loss),
        "final_validation_perplexity": math.exp(losses["final_validation_loss"]),
        "final_train_loss": losses["final_train_loss"],
        "tokens_seen": tokens_seen,
        "documents_by_kind": stats.documents,
        "held_out_scenes_dropped": stats.held_out_scenes_dropped,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    ctx.artifact.write_bytes_atomic("pretrain.json", json.dumps(summary, indent=2).encode())
    documents_seen = sum(stats.documents.values())
    metrics = {
        "initial_validation_perplexity": summary["initial_validation_perplexity"],
        "final_validation_perplexity": summary["final_validation_perplexity"],
        "final_train_loss": losses["final_train_loss"],
        "tokens_seen": float(tokens_seen),
        "held_out_scenes_dropped": float(stats.held_out_scenes_dropped),
        **{f"documents_{kind}": float(n) for kind, n in stats.documents.items()},
        "stage_s": time.perf_counter() - started,
    }
    # Rows: documents read from the stream; the corpus rejects none (held-out scenes are skipped before
    # they become documents, and counted above).
    return StageOutcome(counts=StageCounts(num_in=documents_seen, num_out=documents_seen), metrics=metrics)


STAGE = StageSpec(
    name="lm_pretrain",
    code_version="1",
    config_cls=LmPretrainConfig,
    inputs=("scenes", "tiny_models"),
    run=run_lm_pretrain,
    description="next-token pretraining of the tiny LLM on a generated corpus (two languages, general text)",
)
