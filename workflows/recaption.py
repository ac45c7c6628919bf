"""Recaption any webdataset shard folder into a caption folder, without the rest of the chain.

    python workflows/recaption.py --shards data/shards --output data/captions \
        --model Qwen/Qwen2.5-VL-7B-Instruct --set device=gpu --set max_tokens=512 --set num_engine_replicas=8

The output folder has the recaption stage's layout (captions/, rejected/, _shards/, samples.html,
manifest.json). Rerun with the same arguments to resume: shards with a marker are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from ops.config_schema import ConfigError, build_config
from ops.hashing import content_key
from ops.manifest import build_manifest
from workflows.recipe import RayConfig, apply_override


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflows/recaption.py",
        description="Dense-caption every image of a webdataset shard folder with a VLM (vLLM via Ray Data).",
        epilog="Settings are the recipe's recaption section (pipelines/recaption.py: RecaptionConfig), "
        "e.g. --set prompt_id=short --set max_tokens=128 --set device=gpu --set tensor_parallel_size=2.",
    )
    parser.add_argument(
        "--shards", required=True, help="folder (path or fsspec URI) of {shard}.tar webdataset files"
    )
    parser.add_argument("--output", required=True, help="caption folder to write (path or fsspec URI)")
    parser.add_argument("--model", help="HF id or local path of the VLM (overrides the config's model)")
    parser.add_argument("--config", help="a recipe YAML whose recaption section gives the settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs for a local Ray (default 4)")
    return parser


def load_config(args: argparse.Namespace):
    from pipelines.recaption import RecaptionConfig

    section: dict = {}
    if args.config:
        section = dict(
            (yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}).get("recaption") or {}
        )
    for assignment in args.overrides:
        apply_override(section, assignment)
    if args.model:
        section["model"] = args.model
    config = build_config(RecaptionConfig, section, "recaption")
    if not config.model:
        raise ConfigError("recaption.model: required here (--model or the config's recaption.model)")
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from ops.artifact_dir import ArtifactDir
    from pipelines.base import StageContext
    from pipelines.recaption import STAGE, recaption_shards
    from workflows.ray_runtime import ensure_ray

    print(ensure_ray(RayConfig(num_cpus=args.num_cpus)), flush=True)
    output = ArtifactDir(args.output)
    started = time.time()
    outcome = recaption_shards(config, args.shards, config.model, StageContext(artifact=output, inputs={}))
    key = content_key(STAGE.name, STAGE.code_version, config, {"shards": args.shards})
    output.write_manifest(
        build_manifest(
            stage=STAGE.name,
            key=key,
            code_version=STAGE.code_version,
            config=config,
            input_keys={"shards": args.shards},
            counts=outcome.counts,
            metrics=outcome.metrics,
            started_at=started,
            finished_at=time.time(),
        )
    )
    counts = outcome.counts
    print(
        f"recaptioned {counts.num_in} images: {counts.num_out} captions, {counts.num_rejected} rejected "
        f"{dict(counts.rejected_by_reason)} -> {output.uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
