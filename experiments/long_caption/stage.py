"""The long-caption experiment as a stage: does an LLM's caption-contrastive fine-tuning make long, dense
captions usable for CLIP training, as LLM2CLIP claims?

On synthetic scenes (dense captions: the generator's ground truth), four arms train the same vision
tower (see experiments/long_caption/arms.py) over several seeds; each is scored on the held-out scenes (and
a validation split of the training families) with their short alt-text captions, their long dense ones
and, for rich scenes, the second language's dense ones and the dense ones in synonyms. Before any vision
training, two probes score what each LLM knows (second language -> English, synonyms -> canonical). Writes
results.json (every arm and seed), summary.json (mean and std over seeds), claims.json (the paper's
claims, checked), table.md and the plots (experiments/long_caption/report.py); all go to the stage's
MLflow run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from experiments.long_caption.config import LongCaptionExperimentConfig, experiment_inputs
from experiments.long_caption.report import (
    METRICS,
    check_claims,
    length_plot,
    recall_by_length,
    recall_plot,
    summarize,
    table_markdown,
)
from ops.config_schema import settings_from
from ops.manifest import StageCounts, count_reasons
from ops.stage import StageContext, StageOutcome, StageSpec


def run_long_caption_experiment(config: LongCaptionExperimentConfig, ctx: StageContext) -> StageOutcome:
    from experiments.long_caption.runs import run_arms_on_ray
    from experiments.long_caption.samples import (
        PROBES,
        captioned,
        knowledge_probe,
        llm_cra,
        load_encoders,
        read_samples,
        split_validation,
        unseen_token_shares,
    )
    from models.vision_tower import load_vision_tower
    from ops.image_transforms import ImageTransformConfig

    started = time.perf_counter()
    tiny = ctx.inputs["tiny_models"]
    _check_base_matches_finetune(ctx.inputs["finetune_text"], config.base_llm_stage)
    all_train, held_samples, rejected = read_samples(ctx.inputs["download"].child_uri("shards"), config)
    fit_samples, validation_samples = split_validation(all_train, config.validation_share)
    if len(fit_samples) < 2 or len(held_samples) < 2:
        raise ValueError(
            f"long_caption_experiment: {len(fit_samples)} training and {len(held_samples)} held-out "
            f"samples with a {config.dense_caption_field!r}; need at least 2 of each"
        )
    tower, mean, std = load_vision_tower(tiny.child_uri("vision"))
    transform = ImageTransformConfig(size_px=int(tower.config.image_size), mean=mean, std=std)
    encoders, tokenizer = load_encoders(
        ctx.inputs["finetune_text"].child_uri("encoder"),
        ctx.inputs[config.base_llm_stage].child_uri("llm"),
        tiny.child_uri("llm"),
    )
    cra = llm_cra(encoders, tokenizer, held_samples, config)
    probes = {kind: knowledge_probe(encoders, tokenizer, validation_samples, kind, config) for kind in PROBES}
    arm_encoders = {name: encoders[name] for name in ("finetuned", "base")}
    train, _ = captioned(fit_samples, transform, arm_encoders, tokenizer, config)
    held_out, cut = captioned(held_samples, transform, arm_encoders, tokenizer, config)
    validation = (
        captioned(validation_samples, transform, arm_encoders, tokenizer, config)[0]
        if validation_samples
        else None
    )
    del encoders, arm_encoders  # the LLMs are not needed past this point
    encoded_s = time.perf_counter() - started
    settings = arm_settings(config)

    def log_row(row: dict) -> None:
        shown = [
            m
            for m in (
                "short_i2t_r1",
                "long_i2t_r1",
                "long_t2i_r1",
                "l2_i2t_r1",
                "syn_i2t_r1",
                "val_long_i2t_r1",
            )
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
        **unseen_token_shares(tokenizer, all_train, held_samples),
    }
    table = table_markdown(summary, claims, config.seeds, sizes, cra, probes)
    artifact = ctx.artifact
    artifact.write_json_atomic(
        "results.json", [{k: v for k, v in r.items() if not k.endswith("_hits")} for r in results]
    )
    artifact.write_json_atomic(
        "summary.json", {"summary": summary, "sizes": sizes, "cra": cra, "probes": probes}
    )
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
    for scores in probes.values():
        metrics.update(scores)
    metrics.update({name: value for name, value in sizes.items() if name.endswith("_unseen_token_share")})
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
        "probes": probes,
        "arms": list(config.arms),
        "seeds": list(config.seeds),
    }
    return StageOutcome(counts=counts, metrics=metrics, details=details)


def arm_settings(config: LongCaptionExperimentConfig):
    """What every (arm, seed) run trains with (experiments/long_caption/arms.py), from the recipe."""
    from experiments.long_caption.arms import ArmSettings
    from models.text_tower_clip import TextTowerSpec

    tower = TextTowerSpec(
        config.text_tower_hidden_size,
        config.text_tower_layers,
        config.text_tower_heads,
        config.clip_max_tokens,
    )
    return settings_from(ArmSettings, config, text_tower=tower)


def _check_base_matches_finetune(finetune, base_llm_stage: str) -> None:
    """The base_llm arm must use the LLM finetune_text started from, or (B) compares different models."""
    used = finetune.read_manifest()["config"].get("base_model_stage", "tiny_models")
    if used != base_llm_stage:
        raise ValueError(
            f"long_caption_experiment.base_llm_stage is {base_llm_stage!r} but finetune_text fine-tuned "
            f"{used!r}'s LLM; set both to the same stage"
        )


STAGE = StageSpec(
    name="long_caption_experiment",
    # 2: clip_long, second-language captions, CRA of three LLMs, validation split; 3: runs as Ray tasks of
    # cpus_per_run threads, text towers take short and long captions apart (float sums may differ);
    # 4: recall by length counts ties as misses, as the table does (argmax gave ties to the first row);
    # 5: held-out images resized as CLIPImageProcessor does; 6: the cross-lingual probe (validation scenes);
    # 7: synonym captions and probe, (D) against the text towers, LLM arms on train_vision's step
    code_version="7",
    config_cls=LongCaptionExperimentConfig,
    inputs=("download", "tiny_models", "lm_pretrain", "finetune_text"),
    run=run_long_caption_experiment,
    resolve_inputs=experiment_inputs,
    description="LLM2CLIP vs base-LLM features vs a 77-token CLIP text tower, short and long captions",
)
