"""Caption-contrastive fine-tuning stage: an LLM becomes a caption encoder (LLM2CLIP step 1), on Ray Train.

Output layout:
  pairs/train.parquet                       training pairs: key, kind, caption_1, caption_2 (+ hard negatives)
  pairs/eval.parquet                        held-out images: key, original, dense (for CRA)
  pairs/rejected_text_pairs.parquet         text_pairs rows without a query, positive or negative, and why
  mntp_model/                               the MNTP-adapted backbone, when mntp_steps > 0
  train/                                    Ray Train's storage: checkpoints (a rerun resumes from them)
  encoder/                                  merged safetensors, tokenizer, encoder_config.json
"""

from __future__ import annotations

import time

from ops.artifact_dir import ArtifactDir
from ops.errors import BadInputError
from ops.manifest import StageCounts
from ops.stage import StageContext, StageOutcome, StageSpec
from pipelines.finetune_text.config import BASE_MODEL_STAGES, FinetuneTextConfig, finetune_inputs
from pipelines.finetune_text.pairs import write_pairs


def run_finetune_text(config: FinetuneTextConfig, ctx: StageContext) -> StageOutcome:
    base_model = config.base_model or ctx.inputs[config.base_model_stage].child_uri("llm")
    shards = ArtifactDir(ctx.inputs["download"].child_uri("shards"))
    return finetune_on(config, shards, ctx.inputs.get("recaption"), base_model, ctx)


def finetune_on(
    config: FinetuneTextConfig,
    shards: ArtifactDir,
    recaption: ArtifactDir | None,
    base_model: str,
    ctx: StageContext,
) -> StageOutcome:
    """Fine-tune on any folder of img2dataset status tables (`{shard}.parquet`: key, status, caption and
    the dense caption column, or recaption's captions/) into ctx.artifact: what the stage and the
    finetune_text CLI both run."""
    started = time.perf_counter()
    # Streamed one download shard at a time: the driver never holds the pair table.
    counts = write_pairs(shards, recaption, config, ctx.artifact)
    if counts.train_rows < config.batch_size_per_worker * config.num_workers:
        raise BadInputError(
            f"finetune_text: {counts.train_rows} training pairs, fewer than one global batch of "
            f"num_workers={config.num_workers} x batch_size_per_worker={config.batch_size_per_worker}; "
            "lower finetune_text.batch_size_per_worker or finetune_text.num_workers, or add data"
        )
    # CRA before and after comes back from rank 0, which holds both models anyway: the driver (often a
    # CPU head node) never loads the LLM. (torch loads here, not when the registry is imported.)
    from pipelines.finetune_text.worker import run_training

    result = run_training(
        config,
        base_model,
        ctx.artifact.child_uri("pairs/train.parquet"),
        ctx.artifact.child_uri("pairs/eval.parquet"),
        ctx,
    )
    metrics = {
        **result,
        "num_train_images": float(counts.train_images),
        "num_train_pairs": float(counts.train_rows),
        "num_eval_pairs": float(counts.eval_images),
        **{f"num_text_pairs_{name}": float(count) for name, count in counts.text_pairs.items()},
        "stage_s": time.perf_counter() - started,
    }
    # Images and text-pair rows, each counted once: in, kept, rejected with a reason.
    num_text = sum(counts.text_pairs.values())
    num_text_rejected = sum(counts.text_rejected.values())
    kept = counts.train_images + counts.eval_images + num_text
    counts_out = StageCounts(
        num_in=kept + counts.unusable + num_text_rejected,
        num_out=kept,
        num_rejected=counts.unusable + num_text_rejected,
        rejected_by_reason={
            **({"missing_caption": counts.unusable} if counts.unusable else {}),
            **counts.text_rejected,
        },
    )
    return StageOutcome(counts=counts_out, metrics=metrics)


STAGE = StageSpec(
    name="finetune_text",
    # 3: batches dealt by (seed, step, rank), not by Ray Data's split; 4: LoRA merged in fp32 and the saved
    # encoder scored (cra_finetuned), an instruction pooled by character offsets, the loss on cosine
    # scores, random negatives by default; 5: pairs streamed into row groups (each negative drawn within
    # its group of 2,048 images), workers shuffle by windows of shuffle_window_pairs
    code_version="5",
    config_cls=FinetuneTextConfig,
    inputs=("download", "recaption", *BASE_MODEL_STAGES),
    run=run_finetune_text,
    description="caption-contrastive LoRA fine-tuning of the LLM on Ray Train; CRA before and after",
    resumable=True,  # a rerun keeps train/ so Ray Train resumes from the last checkpoint
    resolve_inputs=finetune_inputs,
)
