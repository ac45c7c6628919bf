"""A batch's images decoded and augmented into tensors, with its caption features (collate), in the
training process or off it: decode_ahead collates batches in worker processes, ahead of the step, and
hands them back in order (torch passes their tensors through shared memory).

Spawned, not forked: the training process is a Ray worker with many threads, and a forked child would
inherit their locks. Each process starts once per training run (a few seconds of imports) and uses one
torch thread, so N processes take N cores beside the step's."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image

from ops.errors import BadInputError
from ops.image_decode import ImageDecodeError, decode_rgb
from ops.image_transforms import train_crop
from pipelines.train_vision.records import BatchDraw, JoinedSample, LoaderSettings


def _decoded_or_none(sample: JoinedSample) -> Image.Image | None:
    try:
        return decode_rgb(sample.jpg)
    except ImageDecodeError:
        return None


def collate(
    draw: BatchDraw, settings: LoaderSettings, seed: str
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """Decode and crop the images (uint8: the step normalises them on its device); per sample, the dense
    or the original caption's features (drawn with dense_ratio; an absent one falls back to the other).
    A sample whose image does not decode gives its place to the next spare and is returned as (shard,
    key) among the skipped; a batch whose spares run out fails, naming them (the data is broken, not one
    sample)."""
    rng = random.Random(seed)
    spares = iter(draw.spares)
    pixels, features, skipped = [], [], []
    for sample in draw.samples:
        image = _decoded_or_none(sample)
        while image is None:
            skipped.append((sample.tar_path, sample.key))
            sample = next(spares, None)
            if sample is None:
                raise BadInputError(
                    f"train_vision: {len(skipped)} undecodable images in one batch of {len(draw.samples)}, "
                    f"more than its {len(draw.spares)} spares: {skipped[:8]}; check these shards"
                )
            image = _decoded_or_none(sample)
        pixels.append(train_crop(image, settings.transform, rng))
        use_dense = rng.random() < settings.dense_ratio
        vector = sample.dense if use_dense else sample.original
        if vector is None:
            vector = sample.original if use_dense else sample.dense
        if vector is None:  # the loader deals only samples with caption features
            raise ValueError(f"sample {sample.key}: no caption embedding at all")
        features.append(torch.from_numpy(np.asarray(vector, dtype=np.float32)))
    return torch.stack(pixels), torch.stack(features), skipped


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def decode_ahead(
    jobs: Iterator[tuple[int, int, Any, str]],
    collate: Callable[[Any, Any, str], Any],
    settings: Any,
    processes: int,
    prefetch_batches: int,
) -> Iterator[tuple[int, int, Any]]:
    """(epoch, index, collate(chunk, settings, seed)) for each job, in the jobs' order, with up to
    processes x prefetch_batches batches in flight. An error in a process (a bad image) is raised here,
    at the batch it belongs to."""
    import torch.multiprocessing

    depth = max(1, processes * prefetch_batches)
    pool = ProcessPoolExecutor(
        processes, mp_context=torch.multiprocessing.get_context("spawn"), initializer=_one_thread
    )
    pending: collections.deque = collections.deque()
    try:
        for epoch, index, chunk, seed in jobs:
            pending.append((epoch, index, pool.submit(collate, chunk, settings, seed)))
            if len(pending) >= depth:
                epoch_done, index_done, future = pending.popleft()
                yield epoch_done, index_done, future.result()
        while pending:
            epoch_done, index_done, future = pending.popleft()
            yield epoch_done, index_done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
