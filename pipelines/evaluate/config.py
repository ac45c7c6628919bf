"""evaluate's settings: the retrieval benchmarks and zero-shot sets of the recipe's `evaluate:` section."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ops.config_schema import check, check_model_reference
from ops.hashing import IN_KEY_WHEN_SET, NOT_IN_KEY

RetrievalFormat = Literal[
    "karpathy",
    "caption_folders",
    "sharegpt4v",
    "docci",
    "xm3600",
    "caption_tsv",
    "scenes_short",
    "scenes_long",
]


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    name: str  # metric prefix and table column, e.g. coco, flickr30k, urban1k
    format: RetrievalFormat
    # The annotation file (karpathy, sharegpt4v, docci, xm3600, caption_tsv) or folder (caption_folders);
    # unused by the scenes_* formats, which read the download stage's held-out samples.
    annotations: str = ""
    images: str = ""  # image folder, where the format keeps images apart
    split: str = "test"  # karpathy, docci
    language: str = "en"  # xm3600, caption_tsv
    ids_file: str = ""  # caption_tsv: image ids of the split
    max_images: int = 0  # 0 = all

    def __post_init__(self):
        check(bool(self.name), "name", "a non-empty name", self.name)
        needs_file = not self.format.startswith("scenes_")
        check(not needs_file or bool(self.annotations), "annotations", f"a path for format {self.format}", "")


@dataclasses.dataclass(frozen=True)
class ZeroShotSpec:
    name: str
    # ImageNet-style folder, root/<class folder>/*.jpg. Folders named by ImageNet-1k WordNet id (the
    # standard val layout, n01440764/...) get CLIP's class names; other id-named folders need class_names.
    root: str
    # "{}" is replaced by the class name; empty: CLIP's 80 ImageNet templates (ops/data), as CLIP and
    # CLIP_benchmark evaluate ImageNet
    templates: tuple[str, ...] = ()
    class_names: str = ""  # a .json {folder: name} or a file of one name per line (sorted folder order)
    max_per_class: int = 0

    def __post_init__(self):
        check(all("{}" in t for t in self.templates), "templates", "templates containing {}", self.templates)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    model: str = ""  # exported LLM2CLIP folder; "" = the train_vision stage's export
    encoder: str = ""  # text-encoder folder; "" = the finetune_text stage's encoder
    # "" = the encoder folder's own encoder_config.json; "llm2vec" = an LLM2Vec-format model (an HF id or
    # folder, e.g. microsoft/LLM2CLIP-Llama-3-8B-Instruct-CC-Finetuned) read with the official pooling
    encoder_preset: Literal["", "llm2vec"] = dataclasses.field(default="", metadata=IN_KEY_WHEN_SET)
    benchmarks: tuple[BenchmarkSpec, ...] = ()
    zero_shot: tuple[ZeroShotSpec, ...] = ()
    scenes_split: str = "eval"  # the download samples the scenes_* formats use
    batch_size: int = 64  # images or captions per forward
    use_gpu: bool = False  # the scoring task holds one GPU (the driver never needs one)
    # CPUs the scoring task reserves; its images are decoded on that many threads. Not in the key.
    num_cpus: int = dataclasses.field(default=2, metadata=NOT_IN_KEY)
    heatmap_samples: int = 12  # images in the similarity heatmap
    trust_remote_code: bool = False

    def __post_init__(self):
        check(
            bool(self.benchmarks or self.zero_shot),
            "benchmarks",
            "at least one benchmark or zero-shot set",
            "",
        )
        names = [b.name for b in self.benchmarks] + [z.name for z in self.zero_shot]
        check(len(set(names)) == len(names), "benchmarks", "distinct names", names)
        check(self.batch_size > 0, "batch_size", "a positive count", self.batch_size)
        check(self.num_cpus > 0, "num_cpus", "a positive count", self.num_cpus)
        check_model_reference(self.model, "model")
        check_model_reference(self.encoder, "encoder")
        check(
            not self.encoder_preset or bool(self.encoder),
            "encoder_preset",
            "used with an encoder reference (finetune_text's encoders need none)",
            self.encoder_preset,
        )


def evaluate_inputs(config: EvaluateConfig) -> tuple[str, ...]:
    needed = []
    if any(b.format.startswith("scenes_") for b in config.benchmarks):
        needed.append("download")
    if not config.encoder:
        needed.append("finetune_text")
    if not config.model:
        needed.append("train_vision")
    return tuple(needed)
