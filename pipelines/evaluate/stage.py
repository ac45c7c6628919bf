"""Evaluate stage: retrieval on short- and long-caption sets, CRA, zero-shot classification, report.

Output layout:
  metrics.json        every benchmark's metrics
  table.md / .html    R@1 in the paper's layout (one row, a column pair per benchmark), then R@1/5/10
  recall_bars.png     I2T / T2I recall@1/5/10 per benchmark
  heatmap_{set}.png   image-caption similarity of a small sample of the first retrieval set
All of it is also logged to the stage's MLflow run (metrics as `{set}_{i2t|t2i}_r{k}`, `{set}_cra`,
`{set}_top{k}`).
"""

from __future__ import annotations

import time

from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec
from pipelines.evaluate.config import EvaluateConfig, evaluate_inputs


def scored_remotely(config: EvaluateConfig, model: str, encoder: str, shards_uri: str | None):
    """score_sets as a Ray task holding the stage's CPUs (decode threads) and, with use_gpu, a GPU: the
    driver (a CPU head node, often) never loads a model. Without Ray (the evaluate CLI), in-process."""
    import ray

    from pipelines.evaluate.run import score_sets  # torch: loaded when a run scores, not on --help

    if not ray.is_initialized():
        return (*score_sets(config, model, encoder, shards_uri), "in-process")
    task = ray.remote(score_sets).options(
        num_cpus=config.num_cpus, num_gpus=1 if config.use_gpu else 0, max_retries=0
    )
    return (*ray.get(task.remote(config, model, encoder, shards_uri)), "ray task")


def score(
    config: EvaluateConfig, model: str, encoder: str, shards_uri: str | None, ctx: StageContext
) -> StageOutcome:
    """Evaluate an export folder with a text encoder into ctx.artifact (metrics.json, tables, plots): what
    the stage and the evaluate CLI both run."""
    from pipelines.evaluate.run import write_report

    started = time.perf_counter()
    results, heatmap, scored_in = scored_remotely(config, model, encoder, shards_uri)
    num_images = write_report(results, heatmap, config, model, ctx)
    flat = {
        f"{name}_{metric}": value for name, metrics in results.items() for metric, value in metrics.items()
    }
    flat["evaluate_s"] = time.perf_counter() - started
    ctx.artifact.write_json_atomic("metrics.json", results)
    counts = StageCounts(num_in=num_images, num_out=num_images, num_rejected=0)
    return StageOutcome(
        counts=counts, metrics=flat, details={"model": model, "encoder": encoder, "scored_in": scored_in}
    )


def run_evaluate(config: EvaluateConfig, ctx: StageContext) -> StageOutcome:
    model = config.model or ctx.inputs["train_vision"].child_uri("export")
    encoder = config.encoder or ctx.inputs["finetune_text"].child_uri("encoder")
    download = ctx.inputs.get("download")
    return score(config, model, encoder, download.child_uri("shards") if download else None, ctx)


STAGE = StageSpec(
    name="evaluate",
    # 2: images decoded as training decodes them (16-bit scaled, pixel limit); 3: the resize's long side
    # truncated as CLIPImageProcessor does; 4: recall by CLIP_benchmark's tie rule (strict beside it),
    # ImageNet's WordNet-id folders named by CLIP's class names, CLIP's 80 templates by default
    code_version="4",
    config_cls=EvaluateConfig,
    inputs=("download", "finetune_text", "train_vision"),
    run=run_evaluate,
    description="retrieval on short and long captions, CRA, zero-shot; table and plots",
    resolve_inputs=evaluate_inputs,
)
