"""Caption-contrastive fine-tuning stage: an LLM becomes a caption encoder (LLM2CLIP step 1), on Ray Train.

Output layout:
  pairs/train.parquet, pairs/eval.parquet   the (original, dense) caption pairs used, by key
  train/                                    Ray Train's storage: checkpoints (a rerun resumes from them)
  encoder/                                  merged safetensors, tokenizer, encoder_config.json
"""

from __future__ import annotations

import dataclasses
import time
import zlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.text_encoder import TextEncoderConfig
from models.text_encoder_io import LoraSpec
from ops.artifact_dir import ArtifactDir
from ops.config_schema import check
from ops.manifest import StageCounts
from pipelines.base import StageContext, StageOutcome, StageSpec


@dataclasses.dataclass(frozen=True)
class FinetuneTextConfig:
    base_model: str = ""  # HF id or local path of a causal LLM; "" = the tiny_models stage's LLM
    # Where each image's dense caption comes from: a field img2dataset kept from the url table
    # (a provided recaption, or the demo's ground truth), or the recaption stage's output.
    dense_caption_source: str = "column"  # column | recaption
    dense_caption_column: str = "dense_caption"
    eval_split_value: str = "eval"  # rows whose `split` field equals this are held out for CRA
    num_eval_pairs: int = 256  # held out by key hash when the data has no `split` field
    encoder: TextEncoderConfig = dataclasses.field(default_factory=TextEncoderConfig)
    lora: LoraSpec | None = dataclasses.field(default_factory=LoraSpec)  # null: full fine-tuning
    temperature: float = 0.02  # LLM2CLIP's logit scale 50
    max_steps: int = 200  # optimizer steps
    batch_size_per_worker: int = 32  # pairs; the loss sees num_workers x this many keys
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    num_workers: int = 2  # Ray Train workers
    use_gpu: bool = False
    bf16: bool = True  # autocast on GPU
    gradient_checkpointing: bool = False
    checkpoint_every_steps: int = 50
    max_failures: int = 1  # worker failures Ray Train recovers from (from the last checkpoint)
    seed: int = 0
    trust_remote_code: bool = False

    def __post_init__(self):
        check(
            self.dense_caption_source in ("column", "recaption"),
            "dense_caption_source",
            "column or recaption",
            self.dense_caption_source,
        )
        check(self.temperature > 0, "temperature", "a positive number", self.temperature)
        for name in ("max_steps", "batch_size_per_worker", "num_workers", "checkpoint_every_steps"):
            check(getattr(self, name) > 0, name, "a positive integer", getattr(self, name))
        check(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)
        check(self.num_eval_pairs > 0, "num_eval_pairs", "a positive count", self.num_eval_pairs)
        check(self.max_failures >= 0, "max_failures", "zero or more", self.max_failures)


def finetune_inputs(config: FinetuneTextConfig) -> tuple[str, ...]:
    needed = ["download"]
    if config.dense_caption_source == "recaption":
        needed.append("recaption")
    if not config.base_model:
        needed.append("tiny_models")
    return tuple(needed)


def collect_pairs(
    download: ArtifactDir, recaption: ArtifactDir | None, config: FinetuneTextConfig
) -> tuple[pa.Table, pa.Table, int]:
    """(train, eval, rows without a usable pair) from img2dataset's per-shard parquet (no image bytes)."""
    tables = []
    for name in download.list("shards"):
        if name.endswith(".parquet"):
            with download.open(f"shards/{name}") as handle:
                table = pq.read_table(handle)
            tables.append(table.filter(pc.equal(table["status"], "success")))
    rows = pa.concat_tables(tables, promote_options="permissive")
    if config.dense_caption_source == "recaption":
        captions = [
            pq.read_table(recaption.open(f"captions/{n}"))
            .select(["key", "caption"])
            .rename_columns(["key", "dense"])
            for n in recaption.list("captions")
        ]
        rows = rows.join(pa.concat_tables(captions), "key", join_type="left outer")
    else:
        if config.dense_caption_column not in rows.column_names:
            raise ValueError(
                f"{download.uri}/shards: no field {config.dense_caption_column!r} in the samples; "
                f"fields are {rows.column_names}"
            )
        rows = rows.append_column("dense", rows[config.dense_caption_column])
    pairs = rows.select(["key", "caption", "dense", *(["split"] if "split" in rows.column_names else [])])
    pairs = pairs.rename_columns(["key", "original", "dense", *pairs.column_names[3:]])
    usable = pc.and_(pc.invert(pc.is_null(pairs["original"])), pc.invert(pc.is_null(pairs["dense"])))
    unusable = pairs.num_rows - int(pc.sum(usable).as_py() or 0)
    pairs = pairs.filter(usable).sort_by("key")
    if "split" in pairs.column_names:
        held = pc.equal(pairs["split"], config.eval_split_value)
    else:
        ranks = sorted(range(pairs.num_rows), key=lambda i: zlib.crc32(pairs["key"][i].as_py().encode()))
        chosen = set(ranks[: config.num_eval_pairs])
        held = pa.array([i in chosen for i in range(pairs.num_rows)])
    return pairs.filter(pc.invert(held)), pairs.filter(held), unusable


def run_finetune_text(config: FinetuneTextConfig, ctx: StageContext) -> StageOutcome:
    from pipelines.finetune_text_train import evaluate_cra, run_training

    started = time.perf_counter()
    base_model = config.base_model or ctx.inputs["tiny_models"].child_uri("llm")
    train, held_out, unusable = collect_pairs(ctx.inputs["download"], ctx.inputs.get("recaption"), config)
    if train.num_rows < config.batch_size_per_worker * config.num_workers:
        raise ValueError(
            f"finetune_text: {train.num_rows} training pairs, fewer than one global batch "
            f"({config.num_workers} workers x {config.batch_size_per_worker})"
        )
    ctx.artifact.write_parquet_atomic("pairs/train.parquet", train)
    ctx.artifact.write_parquet_atomic("pairs/eval.parquet", held_out)
    result = run_training(config, base_model, train, ctx)
    encoder_uri = ctx.artifact.child_uri("encoder")
    cra_base = evaluate_cra(base_model, config, held_out, trust_remote_code=config.trust_remote_code)
    cra_tuned = evaluate_cra(
        encoder_uri, config, held_out, trust_remote_code=config.trust_remote_code, saved=True
    )
    metrics = {
        **result,
        "cra_base": cra_base,
        "cra_finetuned": cra_tuned,
        "num_train_pairs": float(train.num_rows),
        "num_eval_pairs": float(held_out.num_rows),
        "stage_s": time.perf_counter() - started,
    }
    ctx.log_metrics(metrics, None)
    total = train.num_rows + held_out.num_rows + unusable
    counts = StageCounts(
        num_in=total,
        num_out=train.num_rows + held_out.num_rows,
        num_rejected=unusable,
        rejected_by_reason={"missing_caption": unusable} if unusable else {},
    )
    return StageOutcome(counts=counts, metrics=metrics)


STAGE = StageSpec(
    name="finetune_text",
    code_version="1",
    config_cls=FinetuneTextConfig,
    inputs=("download", "tiny_models"),
    run=run_finetune_text,
    description="caption-contrastive LoRA fine-tuning of the LLM on Ray Train; CRA before and after",
    sharded=True,  # a rerun keeps train/ so Ray Train resumes from the last checkpoint
    resolve_inputs=finetune_inputs,
)
