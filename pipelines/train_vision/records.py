"""The vision loader's records: a sample joined with its caption features, the loader's settings, and the
position in the data that a checkpoint stores."""

from __future__ import annotations

import dataclasses

import numpy as np

from ops.image_transforms import ImageTransformConfig


@dataclasses.dataclass(frozen=True)
class JoinedSample:
    key: str
    jpg: bytes
    original: np.ndarray | None  # LLM embedding of the original caption (None: absent)
    dense: np.ndarray | None
    split: str | None
    tar_path: str = ""  # the shard it came from, for error messages


@dataclasses.dataclass(frozen=True)
class BatchDraw:
    """A batch's samples, and spares that take the place of samples whose image does not decode."""

    samples: list[JoinedSample]
    spares: list[JoinedSample]


@dataclasses.dataclass
class DataPosition:
    epoch: int = 0
    batches_in_epoch: int = 0
    # [shard, key] of every undecodable image this worker has met: a checkpoint keeps them, so a resumed
    # run counts the ones met before it (the batches it skips to are not decoded again)
    undecodable: list[list[str]] = dataclasses.field(default_factory=list)
    # The epoch's stream after the last batch handed out (epoch_stream.EpochStream.snapshot) and how many
    # samples it had already drawn for the next batch: a resume seeks there (None: read from the
    # epoch's start, skipping batches_in_epoch batches)
    stream: dict | None = None
    carried: int = 0


@dataclasses.dataclass(frozen=True)
class LoaderSettings:
    batch_size: int  # samples per worker per step
    dense_ratio: float  # share of samples that train on the dense caption's features (LLM2CLIP: 0.5)
    shuffle_buffer: int  # samples
    seed: int
    split: str | None = None  # keep only samples whose split is absent or equals this (None: all)
    held_out_keys: frozenset[str] = frozenset()  # samples held out for evaluation, never trained on
    transform: ImageTransformConfig = dataclasses.field(default_factory=ImageTransformConfig)
    decode_processes: int = 0  # 0: decode and augment in the training process; N: in N processes, ahead
    prefetch_batches: int = 2  # batches each decode process works ahead of the step
