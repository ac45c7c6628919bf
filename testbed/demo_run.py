"""The small demo run that the suite submits once and the cluster benchmark repeats: the demo recipe at
sizes of seconds per stage, and how it spreads over a cluster."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO_ROOT / "configs" / "demo.yaml"
# The demo recipe's stages, in chain order.
DEMO_STAGES = (
    "scenes",
    "tiny_models",
    "download",
    "recaption",
    "finetune_text",
    "embed",
    "train_vision",
    "evaluate",
)
# Small enough for seconds per run, big enough for several shards per split.
SMALL_DEMO = (
    "scenes.num_train=48",
    "scenes.num_eval=16",
    "scenes.samples_per_shard=16",
    "download.samples_per_shard=32",
)
# How the demo job uses the cluster; none of these is part of a stage's key, so runs of SMALL_DEMO on a
# local root reuse the job's artifacts.
ON_THE_CLUSTER = (
    "download.distributor=ray",
    "finetune_text.placement_strategy=SPREAD",
    "train_vision.placement_strategy=SPREAD",
)
