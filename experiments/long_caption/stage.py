"""The long-caption experiment as a stage: does an LLM's caption-contrastive fine-tuning make long, dense
captions usable for CLIP training, as LLM2CLIP claims?

On synthetic scenes (dense captions: the generator's ground truth), four arms train the same vision
tower (see experiments/long_caption/arms.py) over several seeds; each is scored on the held-out scenes (and
a validation split of the training families) with their short alt-text captions, their long dense ones
and, for rich scenes, the second language's dense ones. Writes results.json (every arm and seed),
summary.json (mean and std over seeds), claims.json (the paper's claims, checked), table.md and the
plots (experiments/long_caption/report.py); all go to the stage's MLflow run.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import pyarrow as pa
import torch

from experiments.long_caption.report import (
    METRICS,
    check_claims,
    length_plot,
    recall_by_length,
    recall_plot,
    summarize,
    table_markdown,
)
from ops.config_schema import check
from ops.manifest import StageCounts, count_reasons
from ops.stage import StageContext, StageOutcome, StageSpec


@dataclasses.dataclass(frozen=True)
class LongCaptionExperimentConfig:
    arms: tuple[str, ...] = ("llm2clip", "base_llm", "clip_77", "clip_long")
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 300  # optimizer steps per arm and seed
    batch_size: int = 32  # image-caption pairs per step
    learning_rate: float = 0.002
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    dense_ratio: float = 0.5  # share of training pairs that use the long caption (LLM2CLIP: 0.5)
    adapter_width: int = 128
    adapter_depth: int = 2
    projection_dim: int = 64
    clip_max_tokens: int = 77  # the clip_77 arm's text context, in tokens
    clip_long_max_tokens: int = 320  # the clip_long arm's: the longest dense caption must fit
    text_tower_hidden_size: int = 128
    text_tower_layers: int = 2
    text_tower_heads: int = 2
    dense_caption_field: str = "dense_caption"  # in each sample's json (the scenes' ground truth)
    eval_split_value: str = "eval"
    encode_batch_size: int = 64  # captions per LLM forward
    cpus_per_run: int = 1  # Ray CPUs (and torch threads) per (arm, seed) task; the tasks run side by side
    # The stage whose llm/ folder is the base LLM (what finetune_text fine-tuned): tiny_models' random-init
    # LLM or lm_pretrain's pretrained one. tiny_models' LLM is scored for CRA either way.
    base_llm_stage: str = "tiny_models"
    # Share of the training families set aside as a validation split (0: none): scored like the held-out
    # scenes, never trained on by the arms; settings are chosen on it, never on the held-out scenes.
    validation_share: float = 0.0

    def __post_init__(self):
        from experiments.long_caption.arms import ARMS

        unknown = [arm for arm in self.arms if arm not in ARMS]
        check(bool(self.arms) and not unknown, "arms", f"a non-empty list from {list(ARMS)}", self.arms)
        check(len(self.seeds) > 0, "seeds", "at least one seed", self.seeds)
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds", self.seeds)
        for name in (
            "max_steps",
            "batch_size",
            "clip_max_tokens",
            "encode_batch_size",
            "projection_dim",
            "cpus_per_run",
        ):
            check(getattr(self, name) > 0, name, "a positive number", getattr(self, name))
        check(0.0 <= self.dense_ratio <= 1.0, "dense_ratio", "a share in [0, 1]", self.dense_ratio)
        check(
            0.0 <= self.validation_share < 1.0, "validation_share", "a share in [0, 1)", self.validation_share
        )
        check(
            self.base_llm_stage in ("tiny_models", "lm_pretrain"),
            "base_llm_stage",
            "tiny_models or lm_pretrain",
            self.base_llm_stage,
        )
        check(
            self.text_tower_hidden_size % self.text_tower_heads == 0,
            "text_tower_hidden_size",
            f"a multiple of text_tower_heads ({self.text_tower_heads})",
            self.text_tower_hidden_size,
        )


@dataclasses.dataclass(frozen=True)
class Sample:
    jpg: bytes
    short: str
    long: str
    l2: str | None  # the second language's dense caption (rich scenes)
    paraphrase: str | None  # the dense caption reworded (rich scenes): CRA's query
    family: str  # scenes sharing a top half; validation is carved by family


def _read_samples(shards_uri: str, config: LongCaptionExperimentConfig):
    """(train, held_out, rejected): Samples by split, and the samples that cannot take part, with the
    reason."""
    from ops.captioned_shards import ORIGINAL, caption_of, iter_shard_folder

    train, held_out, rejected = [], [], []
    for tar_path, sample in iter_shard_folder(shards_uri):
        meta = sample.get("json") or {}
        long = caption_of(sample, config.dense_caption_field)
        lacking = [part for part in ("jpg", "txt") if part not in sample]
        lacking += [] if long else ["dense_caption"]
        if lacking:
            rejected.append(
                {"key": sample["key"], "reason": f"missing_{'_and_'.join(lacking)}", "shard": tar_path}
            )
            continue
        family = meta.get("family")
        row = Sample(
            jpg=sample["jpg"],
            short=caption_of(sample, ORIGINAL) or "",
            long=long,
            l2=meta.get("dense_caption_l2"),
            paraphrase=meta.get("paraphrase"),
            family=str(family if family is not None else meta.get("scene_key", sample["key"])),
        )
        (held_out if meta.get("split") == config.eval_split_value else train).append(row)
    return train, held_out, rejected


def split_validation(train: list[Sample], share: float) -> tuple[list[Sample], list[Sample]]:
    """(fit, validation): whole families by a hash of their id, so no sibling of a validation scene
    is trained on."""
    if share == 0:
        return train, []
    chosen = [s for s in train if zlib.crc32(s.family.encode()) % 10_000 < share * 10_000]
    return [s for s in train if s not in chosen], chosen


def _captioned(samples: list[Sample], transform, encoders, tokenizer, config):
    from experiments.long_caption.arms import TEXT_TOWER_ARMS, CaptionedImages
    from models.text_tower_clip import tokenize_for_clip
    from ops.image_transforms import decode_rgb, eval_transform

    pixels = torch.stack([eval_transform(decode_rgb(s.jpg), transform) for s in samples])
    texts = {"short": [s.short for s in samples], "long": [s.long for s in samples]}
    if all(s.l2 for s in samples):
        texts["l2"] = [s.l2 for s in samples]
    features, tokens, cut = {}, {}, {}
    with torch.no_grad():
        for name, encoder in encoders.items():
            features[name] = {
                kind: encoder.encode(tokenizer, captions, batch_size=config.encode_batch_size).float()
                for kind, captions in texts.items()
            }
    contexts = {"clip_77": config.clip_max_tokens, "clip_long": config.clip_long_max_tokens}
    for arm in TEXT_TOWER_ARMS:
        tokens[arm] = {}
        for kind, captions in texts.items():
            tokens[arm][kind], share = tokenize_for_clip(tokenizer, captions, contexts[arm])
            if arm == "clip_77":
                cut[kind] = share
            elif share > 0:
                raise ValueError(
                    f"long_caption_experiment: {100 * share:.0f}% of the {kind} captions exceed "
                    f"clip_long_max_tokens={config.clip_long_max_tokens}; raise it"
                )
    return CaptionedImages(pixels, features, tokens), cut


def llm_cra(encoders, tokenizer, samples: list[Sample], config) -> dict[str, float]:
    """CRA of each LLM on the held-out scenes: each query caption (the paraphrase where the scenes have
    one, else the short caption) must retrieve its own dense caption among all of them."""
    from ops.retrieval_metrics import caption_retrieval_accuracy

    queries = [s.paraphrase or s.short for s in samples]
    keys = [s.long for s in samples]
    scores = {}
    with torch.no_grad():
        for name, encoder in encoders.items():
            first = encoder.encode(tokenizer, queries, batch_size=config.encode_batch_size).float()
            second = encoder.encode(tokenizer, keys, batch_size=config.encode_batch_size).float()
            scores[f"cra_{name}"] = caption_retrieval_accuracy(first, second)
    return scores


def _load_encoders(tuned_uri: str, base_uri: str, random_uri: str):
    """The fine-tuned encoder; the base LLM it was tuned from and tiny_models' random-init LLM, pooled
    the same way (same encoder settings)."""
    from transformers import AutoModel

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_io import load_text_encoder
    from ops.artifact_dir import ArtifactDir

    with ArtifactDir(tuned_uri).local_copy("") as folder:
        tuned, tokenizer = load_text_encoder(folder)
    encoders = {"finetuned": tuned.eval()}
    for name, uri in (("base", base_uri), ("random_init", random_uri)):
        with ArtifactDir(uri).local_copy("") as folder:
            backbone = AutoModel.from_pretrained(folder, use_safetensors=True)
        encoders[name] = LLMTextEncoder(backbone.eval(), tuned.config)
    return encoders, tokenizer


def run_long_caption_experiment(config: LongCaptionExperimentConfig, ctx: StageContext) -> StageOutcome:
    from experiments.long_caption.arms import ArmSettings
    from experiments.long_caption.runs import run_arms_on_ray
    from models.text_tower_clip import TextTowerSpec
    from models.vision_tower import load_vision_tower
    from ops.image_transforms import ImageTransformConfig

    started = time.perf_counter()
    tiny = ctx.inputs["tiny_models"]
    _check_base_matches_finetune(ctx.inputs["finetune_text"], config.base_llm_stage)
    all_train, held_samples, rejected = _read_samples(ctx.inputs["download"].child_uri("shards"), config)
    fit_samples, validation_samples = split_validation(all_train, config.validation_share)
    if len(fit_samples) < 2 or len(held_samples) < 2:
        raise ValueError(
            f"long_caption_experiment: {len(fit_samples)} training and {len(held_samples)} held-out "
            f"samples with a {config.dense_caption_field!r}; need at least 2 of each"
        )
    tower, mean, std = load_vision_tower(tiny.child_uri("vision"))
    transform = ImageTransformConfig(size_px=int(tower.config.image_size), mean=mean, std=std)
    encoders, tokenizer = _load_encoders(
        ctx.inputs["finetune_text"].child_uri("encoder"),
        ctx.inputs[config.base_llm_stage].child_uri("llm"),
        tiny.child_uri("llm"),
    )
    cra = llm_cra(encoders, tokenizer, held_samples, config)
    arm_encoders = {name: encoders[name] for name in ("finetuned", "base")}
    train, _ = _captioned(fit_samples, transform, arm_encoders, tokenizer, config)
    held_out, cut = _captioned(held_samples, transform, arm_encoders, tokenizer, config)
    validation = (
        _captioned(validation_samples, transform, arm_encoders, tokenizer, config)[0]
        if validation_samples
        else None
    )
    del encoders, arm_encoders  # the LLMs are not needed past this point
    encoded_s = time.perf_counter() - started
    settings = ArmSettings(
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        dense_ratio=config.dense_ratio,
        adapter_width=config.adapter_width,
        adapter_depth=config.adapter_depth,
        projection_dim=config.projection_dim,
        text_tower=TextTowerSpec(
            config.text_tower_hidden_size,
            config.text_tower_layers,
            config.text_tower_heads,
            config.clip_max_tokens,
        ),
        clip_long_max_tokens=config.clip_long_max_tokens,
    )

    def log_row(row: dict) -> None:
        shown = [
            m
            for m in ("short_i2t_r1", "long_i2t_r1", "long_t2i_r1", "l2_i2t_r1", "val_long_i2t_r1")
            if m in row
        ]
        print(
            f"[long_caption_experiment] {row['arm']:<9} seed {row['seed']}: "
            + ", ".join(f"{m} {100 * row[m]:.1f}" for m in shown)
            + f" ({row['run_s']:.0f} s)",
            flush=True,
        )
        logged = [m for m in (*METRICS, *(f"val_{m}" for m in METRICS), "loss_last") if m in row]
        ctx.log_metrics({f"{row['arm']}_{m}": row[m] for m in logged}, row["seed"])

    results = run_arms_on_ray(
        config.arms,
        config.seeds,
        tower,
        train,
        held_out,
        settings,
        tokenizer,
        config.cpus_per_run,
        log_row,
        validation,
    )
    runs_s = time.perf_counter() - started - encoded_s
    summary = summarize(results, config.arms)
    claims = check_claims(summary, cra, chance=1 / len(held_out))
    long_lengths = [len(ids) for ids in tokenizer([s.long for s in held_samples])["input_ids"]]
    curves = recall_by_length(results, long_lengths)
    sizes = {
        "train": len(all_train),
        "validation": len(validation_samples),
        "held_out": len(held_out),
        "long_cut": cut["long"],
        "short_cut": cut["short"],
        "long_tokens": sum(long_lengths) / len(long_lengths),
        "long_tokens_min": min(long_lengths),
        "long_tokens_max": max(long_lengths),
        "long_tokens_quartiles": statistics.quantiles(long_lengths, n=4)
        if len(long_lengths) > 1
        else long_lengths,
        "max_tokens": config.clip_max_tokens,
    }
    table = table_markdown(summary, claims, config.seeds, sizes, cra)
    artifact = ctx.artifact
    artifact.write_json_atomic(
        "results.json", [{k: v for k, v in r.items() if not k.endswith("_hits")} for r in results]
    )
    artifact.write_json_atomic("summary.json", {"summary": summary, "sizes": sizes, "cra": cra})
    artifact.write_json_atomic("claims.json", claims)
    artifact.write_json_atomic("recall_by_length.json", curves)
    artifact.write_bytes_atomic("table.md", table.encode())
    if rejected:
        artifact.write_parquet_atomic("rejected.parquet", pa.Table.from_pylist(rejected))
    plots = {
        "recalls.png": recall_plot(summary),
        "recall_by_length.png": length_plot(curves, config.clip_max_tokens),
    }
    print(table, flush=True)
    ctx.log_text(table, "table.md")
    with tempfile.TemporaryDirectory() as folder:
        for name, png in plots.items():
            artifact.write_bytes_atomic(name, png)
            (Path(folder) / name).write_bytes(png)
            ctx.log_file(str(Path(folder) / name))
    metrics = {
        f"{arm}_{m}_mean": summary[arm][m]["mean"] for arm in summary for m in summary[arm] if m in METRICS
    }
    metrics.update({f"claim_{i}_holds": float(c["holds"]) for i, c in enumerate(claims)})
    metrics.update(cra)
    metrics.update({"long_captions_cut_share": cut["long"], "experiment_s": time.perf_counter() - started})
    metrics.update({"encode_s": encoded_s, "runs_s": runs_s})
    kept = len(all_train) + len(held_samples)
    reasons = count_reasons(row["reason"] for row in rejected)
    counts = StageCounts(
        num_in=kept + len(rejected), num_out=kept, num_rejected=len(rejected), rejected_by_reason=reasons
    )
    details = {
        "claims": claims,
        "sizes": sizes,
        "cra": cra,
        "arms": list(config.arms),
        "seeds": list(config.seeds),
    }
    return StageOutcome(counts=counts, metrics=metrics, details=details)


def _check_base_matches_finetune(finetune, base_llm_stage: str) -> None:
    """The base_llm arm must use the LLM finetune_text started from, or (B) compares different models."""
    used = finetune.read_manifest()["config"].get("base_model_stage", "tiny_models")
    if used != base_llm_stage:
        raise ValueError(
            f"long_caption_experiment.base_llm_stage is {base_llm_stage!r} but finetune_text fine-tuned "
            f"{used!r}'s LLM; set both to the same stage"
        )


def experiment_inputs(config: LongCaptionExperimentConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys(("download", "tiny_models", config.base_llm_stage, "finetune_text")))


STAGE = StageSpec(
    name="long_caption_experiment",
    # 2: clip_long, second-language captions, CRA of three LLMs, validation split; 3: runs as Ray tasks of
    # cpus_per_run threads, text towers take short and long captions apart (float sums may differ);
    # 4: recall by length counts ties as misses, as the table does (argmax gave ties to the first row)
    code_version="4",
    config_cls=LongCaptionExperimentConfig,
    inputs=("download", "tiny_models", "lm_pretrain", "finetune_text"),
    run=run_long_caption_experiment,
    resolve_inputs=experiment_inputs,
    description="LLM2CLIP vs base-LLM features vs a 77-token CLIP text tower, short and long captions",
)
