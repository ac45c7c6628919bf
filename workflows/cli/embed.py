"""Embed the captions of any webdataset shard folder with a saved text encoder, without the rest of the
chain: the training shards of a dataset recipe, or an evaluation set's shards.

    python workflows/cli/embed.py --shards data/coco_val/shards \
        --encoder artifacts/finetune_text/<key>/encoder \
        --output data/coco_val/embeddings --set caption_fields='[original]' --set use_gpu=true

The output folder has the embed stage's layout (sidecars/, rejected/, _shards/, manifest.json). Rerun
with the same arguments to resume: shards with a marker are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.config_schema import ConfigError
from workflows.cli.standalone import add_settings_arguments, run_stage_cli


def build_parser(prog: str = "workflows/cli/embed.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Embed every caption of a webdataset shard folder with a frozen text encoder (Ray Data).",
        epilog="Settings are the recipe's embed section (pipelines/embed/config.py: EmbedConfig), e.g. "
        "--set caption_fields='[original, dense]' --set dtype=float32 --set num_actors=4 --set use_gpu=true.",
    )
    parser.add_argument("--shards", required=True, help="folder (path or fsspec URI) of {shard}.tar files")
    parser.add_argument(
        "--encoder", help="text-encoder folder saved by finetune_text (overrides embed.encoder)"
    )
    parser.add_argument("--recaptions", help="a recaption folder, when dense_caption_source is recaption")
    parser.add_argument("--output", required=True, help="embedding folder to write (path or fsspec URI)")
    add_settings_arguments(parser, "embed")
    return parser


def main(argv: list[str] | None = None, prog: str = "workflows/cli/embed.py") -> int:
    from pipelines.embed.stage import STAGE, embed_shards

    args = build_parser(prog).parse_args(argv)

    def validate(config) -> None:
        dense_from_recaption = config.dense_caption_source == "recaption" and "dense" in config.caption_fields
        if dense_from_recaption and not args.recaptions:
            raise ConfigError("embed.dense_caption_source: recaption needs --recaptions FOLDER")

    def summary(outcome, output) -> str:
        counts = outcome.counts
        return (
            f"embedded {int(outcome.metrics['num_captions'])} captions of {counts.num_in} samples "
            f"({counts.num_rejected} lacking a field {dict(counts.rejected_by_reason)}), "
            f"dim {outcome.details['dim']} -> {output.uri}"
        )

    return run_stage_cli(
        args,
        STAGE,
        {"encoder": args.encoder},
        lambda config, ctx: embed_shards(config, args.shards, config.encoder, ctx, args.recaptions),
        lambda config: {"shards": args.shards, "encoder": config.encoder},
        summary,
        validate,
    )


if __name__ == "__main__":
    sys.exit(main())
