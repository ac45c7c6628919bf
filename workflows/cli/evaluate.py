"""Evaluate any exported LLM2CLIP folder on local benchmark files, without the rest of the chain.

    python workflows/cli/evaluate.py --model artifacts/train_vision/<key>/export \
        --encoder artifacts/finetune_text/<key>/encoder --output eval-out \
        --set 'benchmarks=[{name: coco, format: karpathy, annotations: data/coco/dataset_coco.json,
                            images: data/coco/images}]'

Settings are a recipe's evaluate section (--config) and --set overrides (pipelines/evaluate/stage.py:
EvaluateConfig, BenchmarkSpec, ZeroShotSpec). The output folder gets metrics.json, table.md/.html,
recall_bars.png, heatmap_<set>.png and a manifest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.config_schema import ConfigError
from workflows.cli.standalone import add_settings_arguments, section_config, write_manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflows/cli/evaluate.py",
        description="Retrieval (R@1/5/10, CRA) and zero-shot accuracy of an exported LLM2CLIP model.",
        epilog="Benchmark formats: karpathy (COCO, Flickr30k), caption_folders (Urban-1k), sharegpt4v, "
        "docci, xm3600, caption_tsv (COCO-CN, Flickr30k-CN); zero_shot: ImageNet-style class folders.",
    )
    parser.add_argument("--model", help="exported LLM2CLIP folder (train_vision's export/)")
    parser.add_argument("--encoder", help="text-encoder folder (finetune_text's encoder/)")
    parser.add_argument("--output", required=True, help="folder for the metrics, tables and plots")
    add_settings_arguments(parser, "evaluate", uses_ray=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.evaluate.run import evaluate_all
    from pipelines.evaluate.stage import STAGE

    args = build_parser().parse_args(argv)
    try:
        config = section_config(args, STAGE, {"model": args.model, "encoder": args.encoder})
        for name in ("model", "encoder"):
            if not getattr(config, name):
                raise ConfigError(
                    f"evaluate.{name}: required here (--{name} or the config's evaluate.{name})"
                )
        if any(b.format.startswith("scenes_") for b in config.benchmarks):
            raise ConfigError("evaluate.benchmarks: the scenes_* formats need the workflow's download stage")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from ops.artifact_dir import ArtifactDir
    from ops.manifest import StageCounts
    from ops.stage import StageContext, StageOutcome

    output = ArtifactDir(args.output)
    started = time.time()
    ctx = StageContext(artifact=output, inputs={})
    results, num_images = evaluate_all(config, config.model, config.encoder, None, ctx)
    output.write_json_atomic("metrics.json", results)
    flat = {
        f"{name}_{metric}": value for name, metrics in results.items() for metric, value in metrics.items()
    }
    outcome = StageOutcome(StageCounts(num_in=num_images, num_out=num_images, num_rejected=0), flat)
    write_manifest(
        output, STAGE, config, {"model": config.model, "encoder": config.encoder}, outcome, started
    )
    print((Path(output.path) / "table.md").read_text() if output.is_local else f"-> {output.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
