"""The held-out set that train_vision scores during and after training: the samples sample_plan held out,
read by rank 0 from the shards that hold them alone (each read up to its last held-out key), and the
recalls on them, computed in batches under the run's autocast."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ops.image_decode import ImageDecodeError, decode_rgb
from ops.image_transforms import ImageTransformConfig, eval_transform
from ops.retrieval_metrics import image_text_recalls
from ops.webdataset_io import shard_id_of
from pipelines.train_vision.data import joined_samples

FIELDS = ("dense", "original")


@dataclasses.dataclass
class HeldOutSet:
    """Per caption field, (pixel values, features) of the held-out samples that have it."""

    arrays: dict[str, tuple[torch.Tensor, torch.Tensor]]
    undecodable: list[tuple[str, str]]  # (shard, key) of held-out samples whose image did not decode
    samples_read: int  # samples read from the shards to find them (the cost of loading the set)


def held_out_set(
    held_out: dict[str, tuple[str, ...]], sidecars: dict[str, str], transform: ImageTransformConfig
) -> HeldOutSet:
    """Loaded once per run (rank 0): decoding the held-out images again at every eval would cost a read.
    `held_out` is sample_plan's tar path -> held-out keys; nothing is read when it is empty."""
    found: dict[str, tuple[list, list]] = {field: ([], []) for field in FIELDS}
    undecodable: list[tuple[str, str]] = []
    samples_read = 0
    for tar_path, keys in sorted(held_out.items()):
        wanted = set(keys)
        for sample in joined_samples(tar_path, sidecars[shard_id_of(tar_path)]):
            samples_read += 1
            if sample.key not in wanted:
                continue
            wanted.discard(sample.key)
            try:
                pixels = eval_transform(decode_rgb(sample.jpg), transform)
            except ImageDecodeError:
                undecodable.append((tar_path, sample.key))
            else:
                for field in FIELDS:
                    vector = getattr(sample, field)
                    if vector is not None:
                        found[field][0].append(pixels)
                        found[field][1].append(torch.from_numpy(np.asarray(vector, dtype=np.float32)))
            if not wanted:
                break  # the shard's last held-out sample: the rest of it is not read
    arrays = {field: (torch.stack(p), torch.stack(f)) for field, (p, f) in found.items() if p}
    if not held_out:
        print("[train_vision] no held-out samples (num_eval_samples 0): evaluation skipped", flush=True)
    return HeldOutSet(arrays, undecodable, samples_read)


def evaluate(
    model, held_out: HeldOutSet, device, batch_size: int, autocast_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """I2T / T2I recall@1/5/10 on the held-out samples, against the dense and the original captions;
    forwards of batch_size samples under the training's autocast."""
    model.eval()
    metrics = {}
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
    ):
        for field, (pixels, features) in held_out.arrays.items():
            images, texts = [], []
            for start in range(0, len(features), batch_size):
                out = model(
                    pixel_values=pixels[start : start + batch_size].to(device),
                    llm_embeddings=features[start : start + batch_size].to(device),
                )
                images.append(out["image_embeds"].float().cpu())
                texts.append(out["text_embeds"].float().cpu())
            recalls = image_text_recalls(torch.cat(images), torch.cat(texts))
            metrics.update({f"{field}_{name}": value for name, value in recalls.items()})
            metrics[f"{field}_eval_samples"] = float(len(features))
    model.train()
    return metrics
