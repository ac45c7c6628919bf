"""Fine-tune an LLM into a caption encoder on any shard folder, without the rest of the chain: the caption
pairs come from img2dataset's status tables ({shard}.parquet: caption and the dense caption column) or
from a recaption folder's captions/, and the encoder lands in --output/encoder with its CRA before and after.

    python workflows/cli/finetune_text.py --shards data/cc3m/shards \
        --base-model meta-llama/Llama-3.2-1B-Instruct --output artifacts/my-encoder \
        --config configs/cc3m.yaml --set use_gpu=true

The output folder has the stage's layout (pairs/, train/, encoder/, manifest.json). Rerun with the same
arguments to resume from the last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.config_schema import ConfigError
from workflows.cli.standalone import add_settings_arguments, run_stage_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflows/cli/finetune_text.py",
        description="Caption-contrastive fine-tuning of an LLM on a shard folder's captions (Ray Train).",
        epilog="Settings are the recipe's finetune_text section (pipelines/finetune_text/config.py: "
        "FinetuneTextConfig), e.g. --set max_steps=4000 --set num_workers=8 --set use_gpu=true.",
    )
    parser.add_argument(
        "--shards", required=True, help="folder (path or fsspec URI) of {shard}.parquet status tables"
    )
    parser.add_argument("--base-model", help="HF id or folder of the causal LLM (overrides base_model)")
    parser.add_argument("--recaptions", help="a recaption folder, when dense_caption_source is recaption")
    parser.add_argument("--output", required=True, help="folder to write (path or fsspec URI)")
    add_settings_arguments(parser, "finetune_text")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ops.artifact_dir import ArtifactDir
    from pipelines.finetune_text.stage import STAGE, finetune_on

    args = build_parser().parse_args(argv)

    def validate(config) -> None:
        if config.dense_caption_source == "recaption" and not args.recaptions:
            raise ConfigError("finetune_text.dense_caption_source: recaption needs --recaptions FOLDER")

    def run(config, ctx):
        recaptions = ArtifactDir(args.recaptions) if args.recaptions else None
        return finetune_on(config, ArtifactDir(args.shards), recaptions, config.base_model, ctx)

    def summary(outcome, output) -> str:
        metrics = outcome.metrics
        before, after = metrics.get("cra_base", float("nan")), metrics.get("cra_finetuned", float("nan"))
        pairs = int(metrics["num_train_pairs"])
        return f"{pairs} training pairs; CRA {before:.3f} -> {after:.3f} -> {output.uri}/encoder"

    return run_stage_cli(
        args,
        STAGE,
        {"base_model": args.base_model},
        run,
        lambda config: {
            "shards": args.shards,
            "recaptions": args.recaptions or "",
            "base_model": config.base_model,
        },
        summary,
        validate,
    )


if __name__ == "__main__":
    sys.exit(main())
