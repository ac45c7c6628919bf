"""Evaluate any exported LLM2CLIP folder on local benchmark files, without the rest of the chain.

    python workflows/cli/evaluate.py --model artifacts/train_vision/<key>/export \
        --encoder artifacts/finetune_text/<key>/encoder --output eval-out \
        --set 'benchmarks=[{name: coco, format: karpathy, annotations: data/coco/dataset_coco.json,
                            images: data/coco/images}]'

Settings are a recipe's evaluate section (--config) and --set overrides (pipelines/evaluate/config.py:
EvaluateConfig, BenchmarkSpec, ZeroShotSpec). The output folder gets metrics.json, table.md/.html,
recall_bars.png, heatmap_<set>.png and a manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.config_schema import ConfigError
from workflows.cli.standalone import add_settings_arguments, run_stage_cli


def build_parser(prog: str = "workflows/cli/evaluate.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Retrieval (R@1/5/10, CRA) and zero-shot accuracy of an exported LLM2CLIP model.",
        epilog="Benchmark formats: karpathy (COCO, Flickr30k), caption_folders (Urban-1k), sharegpt4v, "
        "docci, xm3600, caption_tsv (COCO-CN, Flickr30k-CN); zero_shot: ImageNet-style class folders.",
    )
    parser.add_argument("--model", help="exported LLM2CLIP folder (train_vision's export/)")
    parser.add_argument("--encoder", help="text-encoder folder (finetune_text's encoder/)")
    parser.add_argument("--output", required=True, help="folder for the metrics, tables and plots")
    add_settings_arguments(parser, "evaluate", uses_ray=False)
    return parser


def main(argv: list[str] | None = None, prog: str = "workflows/cli/evaluate.py") -> int:
    from pipelines.evaluate.stage import STAGE, score

    args = build_parser(prog).parse_args(argv)

    def validate(config) -> None:
        if any(b.format.startswith("scenes_") for b in config.benchmarks):
            raise ConfigError("evaluate.benchmarks: the scenes_* formats need the workflow's download stage")

    def summary(outcome, output) -> str:
        return (Path(output.path) / "table.md").read_text() if output.is_local else f"-> {output.uri}"

    return run_stage_cli(
        args,
        STAGE,
        {"model": args.model, "encoder": args.encoder},
        lambda config, ctx: score(config, config.model, config.encoder, None, ctx),
        lambda config: {"model": config.model, "encoder": config.encoder},
        summary,
        validate,
        uses_ray=False,
    )


if __name__ == "__main__":
    sys.exit(main())
