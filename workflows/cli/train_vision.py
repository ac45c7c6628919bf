"""Train a CLIP vision tower against precomputed LLM caption features, without the rest of the chain:
any shard folder and the embedding folder the embed CLI (or stage) wrote for it.

    python workflows/cli/train_vision.py --shards data/cc3m/shards --embeddings artifacts/cc3m-embeddings \
        --vision-model openai/clip-vit-large-patch14-336 --output artifacts/my-clip \
        --config configs/cc3m.yaml --set use_gpu=true

The output folder has the stage's layout (train/, export/, rejected/, manifest.json); export/ loads with
transformers (see the README). Rerun with the same arguments to resume from the last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflows.cli.standalone import add_settings_arguments, run_stage_cli


def build_parser(prog: str = "workflows/cli/train_vision.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="CLIP vision tower + LLM2CLIP adapter against precomputed caption features (Ray Train).",
        epilog="Settings are the recipe's train_vision section (pipelines/train_vision/config.py: "
        "TrainVisionConfig), e.g. --set max_steps=30000 --set num_workers=8 --set use_gpu=true.",
    )
    parser.add_argument("--shards", required=True, help="folder (path or fsspec URI) of {shard}.tar files")
    parser.add_argument(
        "--embeddings", required=True, help="the embed output for those shards (sidecars/, manifest.json)"
    )
    parser.add_argument(
        "--vision-model", help="HF id or folder of the CLIP vision tower (overrides vision_model)"
    )
    parser.add_argument("--output", required=True, help="folder to write (path or fsspec URI)")
    add_settings_arguments(parser, "train_vision")
    return parser


def main(argv: list[str] | None = None, prog: str = "workflows/cli/train_vision.py") -> int:
    from ops.artifact_dir import ArtifactDir
    from pipelines.train_vision.stage import STAGE, train_on

    args = build_parser(prog).parse_args(argv)

    def summary(outcome, output) -> str:
        return f"trained on {int(outcome.metrics['num_train_samples'])} samples -> {output.uri}/export"

    return run_stage_cli(
        args,
        STAGE,
        {"vision_model": args.vision_model},
        lambda config, ctx: train_on(
            config, args.shards, ArtifactDir(args.embeddings), config.vision_model, ctx
        ),
        lambda config: {
            "shards": args.shards,
            "embeddings": args.embeddings,
            "vision_model": config.vision_model,
        },
        summary,
    )


if __name__ == "__main__":
    sys.exit(main())
