"""The long-caption experiment's settings (the recipe's `long_caption_experiment:` section): arms, seeds,
sizes, the vision runs' optimisation and the claims' thresholds."""

from __future__ import annotations

import dataclasses

from ops.config_schema import check

ARMS = ("llm2clip", "base_llm", "clip_77", "clip_long")  # what each arm is: see arms.py


@dataclasses.dataclass(frozen=True)
class LongCaptionExperimentConfig:
    arms: tuple[str, ...] = ("llm2clip", "base_llm", "clip_77", "clip_long")
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int = 300  # optimizer steps per arm and seed
    batch_size: int = 32  # image-caption pairs per step
    learning_rate: float = 0.002
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    dense_ratio: float = 0.5  # share of training pairs that use the long caption (LLM2CLIP: 0.5)
    adapter_width: int = 128
    adapter_depth: int = 2
    projection_dim: int = 64
    clip_max_tokens: int = 77  # the clip_77 arm's text context, in tokens
    clip_long_max_tokens: int = 320  # the clip_long arm's: the longest dense caption must fit
    text_tower_hidden_size: int = 128
    text_tower_layers: int = 2
    text_tower_heads: int = 2
    dense_caption_field: str = "dense_caption"  # in each sample's json (the scenes' ground truth)
    eval_split_value: str = "eval"
    encode_batch_size: int = 64  # captions per LLM forward
    cpus_per_run: int = 1  # Ray CPUs (and torch threads) per (arm, seed) task; the tasks run side by side
    # The stage whose llm/ folder is the base LLM (what finetune_text fine-tuned): tiny_models' random-init
    # LLM or lm_pretrain's pretrained one. tiny_models' LLM is scored for CRA either way.
    base_llm_stage: str = "tiny_models"
    # Share of the training families set aside as a validation split (0: none): scored like the held-out
    # scenes, never trained on by the arms; settings are chosen on it, never on the held-out scenes.
    validation_share: float = 0.0

    def __post_init__(self):
        unknown = [arm for arm in self.arms if arm not in ARMS]
        check(bool(self.arms) and not unknown, "arms", f"a non-empty list from {list(ARMS)}", self.arms)
        check(len(self.seeds) > 0, "seeds", "at least one seed", self.seeds)
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct seeds", self.seeds)
        for name in (
            "max_steps",
            "batch_size",
            "clip_max_tokens",
            "encode_batch_size",
            "projection_dim",
            "cpus_per_run",
        ):
            check(getattr(self, name) > 0, name, "a positive number", getattr(self, name))
        check(0.0 <= self.dense_ratio <= 1.0, "dense_ratio", "a share in [0, 1]", self.dense_ratio)
        check(
            0.0 <= self.validation_share < 1.0, "validation_share", "a share in [0, 1)", self.validation_share
        )
        check(
            self.base_llm_stage in ("tiny_models", "lm_pretrain"),
            "base_llm_stage",
            "tiny_models or lm_pretrain",
            self.base_llm_stage,
        )
        check(
            self.text_tower_hidden_size % self.text_tower_heads == 0,
            "text_tower_hidden_size",
            f"a multiple of text_tower_heads ({self.text_tower_heads})",
            self.text_tower_hidden_size,
        )


def experiment_inputs(config: LongCaptionExperimentConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys(("download", "tiny_models", config.base_llm_stage, "finetune_text")))
