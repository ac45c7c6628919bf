"""Tiny-model factory stage: tokenizer, LLM, captioner and vision tower for the CPU demo, saved as HF folders.

Output layout:
  tokenizer/   the scene-language tokenizer (also inside each model folder)
  llm/         LlamaForCausalLM, safetensors: the base LLM the text encoder is fine-tuned from
  captioner/   Idefics3ForConditionalGeneration + processor: the recaption stage's VLM
  vision/      CLIPVisionModel + image processor: the vision tower trained against LLM features
  models.json  parameter counts and paths
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time

from demo.basic_scenes import vocabulary_corpus
from demo.scenes.table import held_out_captions, read_scene_table
from models.tiny_specs import TinyLlmSpec, TinyVisionSpec
from ops.config_schema import check
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec

MODEL_FOLDERS = ("tokenizer", "llm", "captioner", "vision")


@dataclasses.dataclass(frozen=True)
class TinyModelsConfig:
    vocab_size: int = 1024  # BPE merges stop earlier when the scene language runs out of pairs
    seed: int = 0  # torch seed for the random initialisation of every model
    llm: TinyLlmSpec = dataclasses.field(default_factory=TinyLlmSpec)
    captioner_text: TinyLlmSpec = dataclasses.field(default_factory=TinyLlmSpec)
    captioner_vision: TinyVisionSpec = dataclasses.field(default_factory=TinyVisionSpec)
    vision_tower: TinyVisionSpec = dataclasses.field(default_factory=TinyVisionSpec)
    # Documents of the LM-pretraining corpus (demo/lm_corpus.py, its default settings) the tokenizer also
    # learns from, besides the scene captions: 0 for the demo; the long-caption experiment's LLM is
    # pretrained on that corpus, whose second language and general text need tokens of their own.
    tokenizer_lm_documents: int = 0

    def __post_init__(self):
        check(
            self.tokenizer_lm_documents >= 0,
            "tokenizer_lm_documents",
            "zero or more documents",
            self.tokenizer_lm_documents,
        )
        check(
            self.vocab_size >= 300, "vocab_size", "at least 300 (256 bytes + special tokens)", self.vocab_size
        )


def lm_corpus_sample(count: int, held_out: frozenset[str]) -> list[str]:
    """The vocabulary lines and the first `count` documents of the LM corpus's training stream, without
    the held-out scenes (`held_out`: their dense captions)."""
    if count == 0:
        return []
    from demo.lm_corpus import LmCorpusConfig, documents, vocabulary_lines

    stream = documents(LmCorpusConfig(), "train", held_out=held_out)
    return vocabulary_lines() + list(itertools.islice(stream, count))


def run_tiny_models(config: TinyModelsConfig, ctx: StageContext) -> StageOutcome:
    # Imported here: transformers takes seconds to import, and planning or --help must not pay for it.
    from models.tiny_factory import (
        build_tiny_captioner,
        build_tiny_llm,
        build_tiny_vision_tower,
        count_parameters,
        train_scene_tokenizer,
    )

    started = time.perf_counter()
    # The tokenizer learns the words the demo's captions actually use, so captions tokenize compactly.
    captions = read_scene_table(ctx.inputs["scenes"], split="train")
    corpus = (
        vocabulary_corpus()
        + captions.column("caption").to_pylist()
        + captions.column("dense_caption").to_pylist()
        + lm_corpus_sample(config.tokenizer_lm_documents, held_out_captions(ctx.inputs["scenes"]))
    )
    tokenizer = train_scene_tokenizer(corpus, config.vocab_size)

    llm = build_tiny_llm(tokenizer, config.llm, config.seed)
    captioner, processor = build_tiny_captioner(
        tokenizer, config.captioner_text, config.captioner_vision, config.seed
    )
    vision, image_processor = build_tiny_vision_tower(config.vision_tower, config.seed)

    with ctx.artifact.local_dir("tokenizer") as folder:
        tokenizer.save_pretrained(folder)
    with ctx.artifact.local_dir("llm") as folder:
        llm.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    with ctx.artifact.local_dir("captioner") as folder:
        captioner.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
    with ctx.artifact.local_dir("vision") as folder:
        vision.save_pretrained(folder, safe_serialization=True)
        image_processor.save_pretrained(folder)

    parameters = {
        "llm": count_parameters(llm),
        "captioner": count_parameters(captioner),
        "vision": count_parameters(vision),
    }
    summary = {
        "vocab_size": len(tokenizer),
        "parameters": parameters,
        "folders": {name: ctx.artifact.child_uri(name) for name in MODEL_FOLDERS},
        "corpus_lines": len(corpus),
    }
    ctx.artifact.write_bytes_atomic("models.json", json.dumps(summary, indent=2).encode("utf-8"))
    metrics = {
        "vocab_size": float(len(tokenizer)),
        **{f"params_{name}": float(count) for name, count in parameters.items()},
        "build_s": time.perf_counter() - started,
    }
    # One row per model folder written; the factory rejects nothing.
    return StageOutcome(
        counts=StageCounts(num_in=len(MODEL_FOLDERS), num_out=len(MODEL_FOLDERS)), metrics=metrics
    )


STAGE = StageSpec(
    name="tiny_models",
    code_version="2",  # 2: the tokenizer's corpus holds the synonyms of the scene words
    config_cls=TinyModelsConfig,
    inputs=("scenes",),
    run=run_tiny_models,
    description="tiny tokenizer, Llama, Idefics3 captioner and CLIP vision tower, built from configs",
)
