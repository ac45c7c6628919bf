"""LLM2Vec's MNTP step before contrastive training, on a Ray Train worker: LoRA on the causal LM, merged
afterwards, and saved once under the artifact so a restarted worker or a rerun loads it instead."""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.text_encoder_io import apply_lora, enable_gradient_checkpointing, load_backbone
from ops.artifact_dir import ArtifactDir
from ops.config_schema import settings_from
from ops.distributed import rank_and_world
from pipelines.finetune_text.batches import pair_batches
from pipelines.finetune_text.config import FinetuneTextConfig
from pipelines.finetune_text.loop import MntpSettings, mntp_steps
from pipelines.finetune_text.pair_groups import PairGroups

MNTP_FOLDER = "mntp_model"
MNTP_DONE = "_DONE"


def mntp_backbone(
    config: FinetuneTextConfig,
    base_model: str,
    artifact: ArtifactDir,
    pairs: PairGroups,
    device,
    log: Callable[[int, dict[str, float]], None],
    score_base: Callable[[Callable[[], tuple]], None],
):
    """(backbone, tokenizer) after MNTP. score_base(load) scores the base LLM before MNTP: load()
    returns the one loaded here, or loads it when MNTP is already done (only rank 0 calls it)."""
    import torch.distributed as dist

    if artifact.exists(f"{MNTP_FOLDER}/{MNTP_DONE}"):
        score_base(lambda: load_backbone(base_model, config.trust_remote_code))
        with artifact.local_copy(MNTP_FOLDER) as folder:
            return load_backbone(folder, config.trust_remote_code)
    causal, tokenizer = load_backbone(base_model, config.trust_remote_code, causal_lm=True)
    score_base(lambda: (causal.base_model, tokenizer))
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(causal)
    if config.lora is not None:
        causal = apply_lora(causal, config.lora)
    causal.to(device)

    rank, world = rank_and_world()
    text_batches = (
        batch["query_side"] + batch["key_side"]
        for batch in pair_batches(
            pairs,
            config.batch_size_per_worker,
            rank,
            world,
            config.seed,
            query_side=config.query_side,
            window_rows=config.shuffle_window_pairs,
        )
    )
    mntp = settings_from(
        MntpSettings, config, "mntp_", max_length=config.encoder.max_length, seed=config.seed
    )
    autocast = torch.bfloat16 if (config.use_gpu and config.bf16) else None
    mntp_steps(causal, tokenizer, text_batches, mntp, log, device, autocast)
    if config.lora is not None:
        causal = causal.merge_and_unload()
    if rank == 0:
        with artifact.local_dir(MNTP_FOLDER) as folder:
            causal.base_model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
        artifact.write_bytes_atomic(f"{MNTP_FOLDER}/{MNTP_DONE}", b"")
    if world > 1:
        dist.barrier()
    return causal.base_model, tokenizer
