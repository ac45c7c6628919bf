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


def build_parser(prog: str = "workflows/cli/finetune_text.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Caption-contrastive fine-tuning of an LLM on a shard folder's captions (Ray Train).",
        epilog="Settings are the recipe's finetune_text section (pipelines/finetune_text/config.py: "
        "FinetuneTextConfig), e.g. --set max_steps=4000 --set num_workers=8 --set use_gpu=true.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--shards", help="folder (path or fsspec URI) of {shard}.parquet status tables")
    source.add_argument(
        "--pairs",
        help="a caption table instead (csv/tsv/parquet/jsonl) with columns caption and the dense caption "
        "column (dense_caption_column); its rows, numbered, go into the status-table layout under --output",
    )
    parser.add_argument("--base-model", help="HF id or folder of the causal LLM (overrides base_model)")
    parser.add_argument("--recaptions", help="a recaption folder, when dense_caption_source is recaption")
    parser.add_argument("--output", required=True, help="folder to write (path or fsspec URI)")
    add_settings_arguments(parser, "finetune_text")
    return parser


def pairs_as_status_tables(table: str, config, ctx):
    """A caption table as {n:05d}.parquet status tables (key, status, caption, the dense column) under
    the output's pairs_input/, 100,000 rows a file: what finetune_on reads."""
    import pyarrow as pa

    from ops.artifact_dir import ArtifactDir
    from ops.url_table import iter_url_table

    out, rows, part = ArtifactDir(ctx.artifact.child_uri("pairs_input")), 0, 0
    dense = config.dense_caption_column
    for batch in iter_url_table(
        table,
        input_format="auto",
        url_col="caption",
        caption_col=None,
        extra_columns=(dense,),
        batch_rows=100_000,
    ):
        keys = pa.array([f"{rows + i:012d}" for i in range(batch.num_rows)], pa.string())
        status = pa.table(
            {
                "key": keys,
                "status": pa.array(["success"] * batch.num_rows),
                "caption": batch["caption"],
                dense: batch[dense],
            }
        )
        out.write_parquet_atomic(f"{part:05d}.parquet", status)
        rows, part = rows + batch.num_rows, part + 1
    return out


def main(argv: list[str] | None = None, prog: str = "workflows/cli/finetune_text.py") -> int:
    from ops.artifact_dir import ArtifactDir
    from pipelines.finetune_text.stage import STAGE, finetune_on

    args = build_parser(prog).parse_args(argv)

    def validate(config) -> None:
        if config.dense_caption_source == "recaption" and not args.recaptions:
            raise ConfigError("finetune_text.dense_caption_source: recaption needs --recaptions FOLDER")

    def run(config, ctx):
        recaptions = ArtifactDir(args.recaptions) if args.recaptions else None
        shards = ArtifactDir(args.shards) if args.shards else pairs_as_status_tables(args.pairs, config, ctx)
        return finetune_on(config, shards, recaptions, config.base_model, ctx)

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
