"""The long-caption experiment as a stage: does an LLM's caption-contrastive fine-tuning make long, dense
captions usable for CLIP training, as LLM2CLIP claims?

On the demo's scenes (dense captions: the generator's ground truth), three arms train the same vision
tower (see pipelines/long_caption_arms.py) over several seeds; each is scored on the held-out scenes with
their short alt-text captions and with their long dense ones. Writes results.json (every arm and seed),
summary.json (mean and std over seeds), claims.json (the paper's two claims, checked), table.md and
recalls.png; all go to the stage's MLflow run.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import torch

from ops.config_schema import check
from ops.manifest import StageCounts
from pipelines.base import StageContext, StageOutcome, StageSpec

METRICS = tuple(f"{kind}_{d}_r{k}" for kind in ("short", "long") for d in ("i2t", "t2i") for k in (1, 5))


@dataclasses.dataclass(frozen=True)
class LongCaptionExperimentConfig:
    arms: tuple[str, ...] = ("llm2clip", "base_llm", "clip_77")
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
    text_tower_hidden_size: int = 128
    text_tower_layers: int = 2
    text_tower_heads: int = 2
    dense_caption_field: str = "dense_caption"  # in each sample's json (the scenes' ground truth)
    eval_split_value: str = "eval"
    encode_batch_size: int = 64  # captions per LLM forward

    def __post_init__(self):
        from pipelines.long_caption_arms import ARMS

        unknown = [arm for arm in self.arms if arm not in ARMS]
        check(bool(self.arms) and not unknown, "arms", f"a non-empty list from {list(ARMS)}", self.arms)
        check(len(self.seeds) > 0, "seeds", "at least one seed", self.seeds)
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds", self.seeds)
        for name in ("max_steps", "batch_size", "clip_max_tokens", "encode_batch_size", "projection_dim"):
            check(getattr(self, name) > 0, name, "a positive number", getattr(self, name))
        check(0.0 <= self.dense_ratio <= 1.0, "dense_ratio", "a share in [0, 1]", self.dense_ratio)
        check(
            self.text_tower_hidden_size % self.text_tower_heads == 0,
            "text_tower_hidden_size",
            f"a multiple of text_tower_heads ({self.text_tower_heads})",
            self.text_tower_hidden_size,
        )


def _read_samples(shards_uri: str, config: LongCaptionExperimentConfig):
    """(train, held_out, rejected): (jpg bytes, short caption, long caption) triples by split, and the
    samples that cannot take part, with the reason."""
    from ops.webdataset_io import iter_samples, list_shards

    fs, _ = fsspec.core.url_to_fs(shards_uri)
    train, held_out, rejected = [], [], []
    for tar_path in list_shards(shards_uri):
        for sample in iter_samples(fs, tar_path):
            meta = sample.get("json") or {}
            long = meta.get(config.dense_caption_field)
            lacking = [part for part in ("jpg", "txt") if part not in sample] + (
                [] if long else ["dense_caption"]
            )
            if lacking:
                rejected.append(
                    {"key": sample["key"], "reason": f"missing_{'_and_'.join(lacking)}", "shard": tar_path}
                )
                continue
            triple = (sample["jpg"], sample["txt"].decode(), long)
            (held_out if meta.get("split") == config.eval_split_value else train).append(triple)
    return train, held_out, rejected


def _captioned(triples, transform, encoders, tokenizer, config):
    from models.text_tower_clip import tokenize_for_clip
    from ops.image_transforms import decode_rgb, eval_transform
    from pipelines.long_caption_arms import CaptionedImages

    pixels = torch.stack([eval_transform(decode_rgb(jpg), transform) for jpg, _, _ in triples])
    texts = {"short": [t[1] for t in triples], "long": [t[2] for t in triples]}
    features, tokens, cut = {}, {}, {}
    with torch.no_grad():
        for name, encoder in encoders.items():
            features[name] = {
                kind: encoder.encode(tokenizer, captions, batch_size=config.encode_batch_size).float()
                for kind, captions in texts.items()
            }
    for kind, captions in texts.items():
        tokens[kind], cut[kind] = tokenize_for_clip(tokenizer, captions, config.clip_max_tokens)
    return CaptionedImages(pixels, features, tokens), cut


def _load_encoders(tuned_uri: str, base_uri: str):
    """The fine-tuned encoder, and the base LLM pooled the same way (same encoder settings)."""
    from transformers import AutoModel

    from models.text_encoder import LLMTextEncoder
    from models.text_encoder_io import load_text_encoder
    from ops.artifact_dir import ArtifactDir

    with ArtifactDir(tuned_uri).local_copy("") as folder:
        tuned, tokenizer = load_text_encoder(folder)
    with ArtifactDir(base_uri).local_copy("") as folder:
        backbone = AutoModel.from_pretrained(folder, use_safetensors=True)
    return {"finetuned": tuned.eval(), "base": LLMTextEncoder(backbone.eval(), tuned.config)}, tokenizer


def summarize(results: list[dict], arms: tuple[str, ...]) -> dict[str, dict[str, dict[str, float]]]:
    """arm -> metric -> {mean, std} over seeds (std 0 for a single seed)."""
    summary = {}
    for arm in arms:
        rows = [r for r in results if r["arm"] == arm]
        summary[arm] = {}
        for metric in (*METRICS, "loss_first", "loss_last"):
            values = [r[metric] for r in rows]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[arm][metric] = {"mean": statistics.fmean(values), "std": std}
    return summary


def _mean_r1(summary, arm: str, kind: str) -> tuple[float, float]:
    """Mean of I2T and T2I R@1 for a caption kind, and the larger of their seed stds."""
    i2t, t2i = summary[arm][f"{kind}_i2t_r1"], summary[arm][f"{kind}_t2i_r1"]
    return (i2t["mean"] + t2i["mean"]) / 2, max(i2t["std"], t2i["std"])


def _claim(summary, claim: str, other: str, well_below: bool) -> dict:
    (a, a_std), (o, o_std) = _mean_r1(summary, "llm2clip", "long"), _mean_r1(summary, other, "long")
    spread = max(a_std, o_std)
    holds = a - o > spread if well_below else a > o
    return {"claim": claim, "llm2clip": a, "other": o, "gap": a - o, "seed_std": spread, "holds": holds}


def check_claims(summary) -> list[dict]:
    """The paper's two claims, on long-caption R@1 (mean of both directions, over seeds). 'Well below'
    asks for a gap larger than the seed-to-seed spread."""
    claims = []
    if {"llm2clip", "clip_77"} <= summary.keys():
        claims.append(_claim(summary, "llm2clip beats clip_77 on long captions", "clip_77", well_below=False))
    if {"llm2clip", "base_llm"} <= summary.keys():
        claims.append(
            _claim(
                summary, "base_llm falls well below llm2clip on long captions", "base_llm", well_below=True
            )
        )
    return claims


def table_markdown(summary, claims, seeds, sizes: dict[str, float]) -> str:
    header = ["arm"] + [
        f"{k} {d.upper()} R@{r}" for k in ("short", "long") for d in ("i2t", "t2i") for r in (1, 5)
    ]
    lines = [
        f"# Long-caption experiment ({len(seeds)} seeds: {', '.join(map(str, seeds))})",
        "",
        f"{sizes['train']:.0f} training scenes, {sizes['held_out']:.0f} held out; recall in %, mean ± std "
        f"over seeds. {100 * sizes['long_cut']:.0f}% of the held-out long captions exceed the clip_77 arm's "
        f"{sizes['max_tokens']:.0f} tokens (mean length {sizes['long_tokens']:.0f} tokens).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for arm, metrics in summary.items():
        cells = [f"{100 * metrics[m]['mean']:.1f} ± {100 * metrics[m]['std']:.1f}" for m in METRICS]
        lines.append("| " + " | ".join([arm, *cells]) + " |")
    lines += [
        "",
        "| claim (long-caption R@1, mean of I2T and T2I) | llm2clip | other | gap | seed std | holds |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for c in claims:
        values = [f"{100 * c[k]:.1f}" for k in ("llm2clip", "other", "gap", "seed_std")]
        lines.append("| " + " | ".join([c["claim"], *values, "yes" if c["holds"] else "no"]) + " |")
    return "\n".join(lines) + "\n"


def recall_plot(summary) -> bytes:
    """Grouped bars: R@1 per arm, short vs long captions, both directions, with seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.evaluate_report import png_bytes

    columns = ["short_i2t_r1", "short_t2i_r1", "long_i2t_r1", "long_t2i_r1"]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(summary)
    for i, (arm, metrics) in enumerate(summary.items()):
        positions = [c + (i - (len(summary) - 1) / 2) * width for c in range(len(columns))]
        means = [100 * metrics[c]["mean"] for c in columns]
        errors = [100 * metrics[c]["std"] for c in columns]
        axis.bar(positions, means, width, yerr=errors, capsize=3, label=arm)
    axis.set_xticks(range(len(columns)), [c.replace("_r1", " R@1").replace("_", " ") for c in columns])
    axis.set_ylabel("recall (%)")
    axis.set_title("Held-out scenes: short vs long captions")
    axis.legend()
    return png_bytes(figure)


def run_long_caption_experiment(config: LongCaptionExperimentConfig, ctx: StageContext) -> StageOutcome:
    from models.text_tower_clip import TextTowerSpec
    from ops.image_transforms import ImageTransformConfig
    from pipelines.long_caption_arms import ArmSettings, run_arms
    from pipelines.train_vision_train import load_vision_tower

    started = time.perf_counter()
    tiny = ctx.inputs["tiny_models"]
    train_triples, held_triples, rejected = _read_samples(ctx.inputs["download"].child_uri("shards"), config)
    if len(train_triples) < 2 or len(held_triples) < 2:
        raise ValueError(
            f"long_caption_experiment: {len(train_triples)} training and {len(held_triples)} held-out "
            f"samples with a {config.dense_caption_field!r}; need at least 2 of each"
        )
    tower, mean, std = load_vision_tower(tiny.child_uri("vision"))
    transform = ImageTransformConfig(size_px=int(tower.config.image_size), mean=mean, std=std)
    encoders, tokenizer = _load_encoders(
        ctx.inputs["finetune_text"].child_uri("encoder"), tiny.child_uri("llm")
    )
    train, _ = _captioned(train_triples, transform, encoders, tokenizer, config)
    held_out, cut = _captioned(held_triples, transform, encoders, tokenizer, config)
    del encoders  # the LLMs are not needed past this point
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
    )

    def log_row(row: dict) -> None:
        print(
            f"[long_caption_experiment] {row['arm']:<9} seed {row['seed']}: "
            + ", ".join(
                f"{m} {100 * row[m]:.1f}"
                for m in ("short_i2t_r1", "short_t2i_r1", "long_i2t_r1", "long_t2i_r1")
            ),
            flush=True,
        )
        ctx.log_metrics({f"{row['arm']}_{m}": row[m] for m in (*METRICS, "loss_last")}, row["seed"])

    results = run_arms(config.arms, config.seeds, tower, train, held_out, settings, tokenizer, log_row)
    summary = summarize(results, config.arms)
    claims = check_claims(summary)
    long_lengths = [len(ids) for ids in tokenizer([t[2] for t in held_triples])["input_ids"]]
    sizes = {
        "train": len(train),
        "held_out": len(held_out),
        "long_cut": cut["long"],
        "short_cut": cut["short"],
        "long_tokens": sum(long_lengths) / len(long_lengths),
        "max_tokens": config.clip_max_tokens,
    }
    table = table_markdown(summary, claims, config.seeds, sizes)
    artifact = ctx.artifact
    artifact.write_json_atomic("results.json", results)
    artifact.write_json_atomic("summary.json", {"summary": summary, "sizes": sizes})
    artifact.write_json_atomic("claims.json", claims)
    artifact.write_bytes_atomic("table.md", table.encode())
    if rejected:
        artifact.write_parquet_atomic("rejected.parquet", pa.Table.from_pylist(rejected))
    png = recall_plot(summary)
    artifact.write_bytes_atomic("recalls.png", png)
    print(table, flush=True)
    ctx.log_text(table, "table.md")
    with tempfile.TemporaryDirectory() as folder:
        plot = Path(folder) / "recalls.png"
        plot.write_bytes(png)
        ctx.log_file(str(plot))
    metrics = {f"{arm}_{m}_mean": summary[arm][m]["mean"] for arm in summary for m in METRICS}
    metrics.update({f"claim_{i}_holds": float(c["holds"]) for i, c in enumerate(claims)})
    metrics.update({"long_captions_cut_share": cut["long"], "experiment_s": time.perf_counter() - started})
    kept = len(train_triples) + len(held_triples)
    reasons: dict[str, int] = {}
    for row in rejected:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    counts = StageCounts(
        num_in=kept + len(rejected), num_out=kept, num_rejected=len(rejected), rejected_by_reason=reasons
    )
    details = {"claims": claims, "sizes": sizes, "arms": list(config.arms), "seeds": list(config.seeds)}
    return StageOutcome(counts=counts, metrics=metrics, details=details)


STAGE = StageSpec(
    name="long_caption_experiment",
    code_version="1",
    config_cls=LongCaptionExperimentConfig,
    inputs=("download", "tiny_models", "finetune_text"),
    run=run_long_caption_experiment,
    description="LLM2CLIP vs base-LLM features vs a 77-token CLIP text tower, short and long captions",
)
