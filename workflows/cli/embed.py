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
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.config_schema import ConfigError
from workflows.cli.standalone import add_settings_arguments, section_config, write_manifest
from workflows.recipe import RayConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflows/cli/embed.py",
        description="Embed every caption of a webdataset shard folder with a frozen text encoder (Ray Data).",
        epilog="Settings are the recipe's embed section (pipelines/embed/stage.py: EmbedConfig), e.g. "
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


def main(argv: list[str] | None = None) -> int:
    from pipelines.embed.stage import STAGE, embed_shards

    args = build_parser().parse_args(argv)
    try:
        config = section_config(args, STAGE, {"encoder": args.encoder})
        if not config.encoder:
            raise ConfigError("embed.encoder: required here (--encoder or the config's embed.encoder)")
        if (
            "dense" in config.caption_fields
            and config.dense_caption_source == "recaption"
            and not args.recaptions
        ):
            raise ConfigError("embed.dense_caption_source: recaption needs --recaptions FOLDER")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from ops.artifact_dir import ArtifactDir
    from ops.stage import StageContext
    from workflows.ray_runtime import ensure_ray

    print(ensure_ray(RayConfig(num_cpus=args.num_cpus)), flush=True)
    output = ArtifactDir(args.output)
    started = time.time()
    ctx = StageContext(artifact=output, inputs={})
    outcome = embed_shards(config, args.shards, config.encoder, ctx, recaption_uri=args.recaptions)
    inputs = {"shards": args.shards, "encoder": config.encoder}
    write_manifest(output, STAGE, config, inputs, outcome, started)
    counts = outcome.counts
    print(
        f"embedded {int(outcome.metrics['num_captions'])} captions of {counts.num_in} samples "
        f"({counts.num_rejected} lacking a field {dict(counts.rejected_by_reason)}), "
        f"dim {outcome.details['dim']} -> {output.uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
