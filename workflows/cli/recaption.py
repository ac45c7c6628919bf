"""Recaption any webdataset shard folder into a caption folder, without the rest of the chain.

    python workflows/cli/recaption.py --shards data/shards --output data/captions \
        --model Qwen/Qwen2.5-VL-7B-Instruct --set device=gpu --set max_tokens=512 --set num_engine_replicas=8

The output folder has the recaption stage's layout (captions/, rejected/, _shards/, samples.html,
manifest.json). Rerun with the same arguments to resume: shards with a marker are skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflows.cli.standalone import add_settings_arguments, run_stage_cli


def build_parser(prog: str = "workflows/cli/recaption.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Dense-caption every image of a webdataset shard folder with a VLM (vLLM via Ray Data).",
        epilog="Settings are the recipe's recaption section (pipelines/recaption/config.py: "
        "RecaptionConfig), e.g. --set prompt_id=short --set max_tokens=128 --set device=gpu "
        "--set tensor_parallel_size=2.",
    )
    parser.add_argument(
        "--shards", required=True, help="folder (path or fsspec URI) of {shard}.tar webdataset files"
    )
    parser.add_argument("--output", required=True, help="caption folder to write (path or fsspec URI)")
    parser.add_argument("--model", help="HF id or local path of the VLM (overrides the config's model)")
    add_settings_arguments(parser, "recaption")
    return parser


def main(argv: list[str] | None = None, prog: str = "workflows/cli/recaption.py") -> int:
    from pipelines.recaption.stage import STAGE, recaption_shards

    args = build_parser(prog).parse_args(argv)

    def summary(outcome, output) -> str:
        counts = outcome.counts
        return (
            f"recaptioned {counts.num_in} images: {counts.num_out} captions, {counts.num_rejected} rejected "
            f"{dict(counts.rejected_by_reason)} -> {output.uri}"
        )

    return run_stage_cli(
        args,
        STAGE,
        {"model": args.model},
        lambda config, ctx: recaption_shards(config, args.shards, config.model, ctx),
        lambda config: {"shards": args.shards},
        summary,
    )


if __name__ == "__main__":
    sys.exit(main())
