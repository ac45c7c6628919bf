"""The held-out set that train_vision scores during and after training: images of the eval split with
their caption features, loaded once by rank 0, and the recalls on them."""

from __future__ import annotations

import numpy as np
import torch

from ops.image_transforms import ImageTransformConfig, eval_transform
from ops.retrieval_metrics import image_text_recalls
from ops.webdataset_io import shard_id_of
from pipelines.train_vision.data import joined_samples
from pipelines.train_vision.decode import decode_sample


def eval_arrays(
    tar_paths: list[str],
    sidecars: dict[str, str],
    split: str | None,
    transform: ImageTransformConfig,
    fields: tuple[str, ...],
    max_samples: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per caption field, (pixel values, features) of at most max_samples held-out samples of `split`,
    in shard order; scanning stops once enough are found. Fields with no sample are left out."""
    found: dict[str, tuple[list, list]] = {field: ([], []) for field in fields}
    for tar_path in sorted(tar_paths):
        if all(len(found[f][0]) >= max_samples for f in fields):
            break
        for sample in joined_samples(tar_path, sidecars[shard_id_of(tar_path)]):
            if split is not None and sample.split != split:
                continue
            pixels = None
            for field in fields:
                vector = getattr(sample, field)
                if vector is None or len(found[field][0]) >= max_samples:
                    continue
                pixels = pixels if pixels is not None else eval_transform(decode_sample(sample), transform)
                found[field][0].append(pixels)
                found[field][1].append(torch.from_numpy(np.asarray(vector, dtype=np.float32)))
    return {field: (torch.stack(p), torch.stack(f)) for field, (p, f) in found.items() if p}


def held_out_set(
    tar_paths: list[str], sidecars: dict[str, str], split: str, max_samples: int, transform
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Loaded once per run (rank 0): decoding the held-out images again at every eval would cost a scan."""
    held_out = eval_arrays(tar_paths, sidecars, split, transform, ("dense", "original"), max_samples)
    if not held_out:
        print(f"[train_vision] no samples with split {split!r}: evaluation skipped")
    return held_out


def evaluate(model, held_out: dict, device) -> dict[str, float]:
    """I2T / T2I recall@1/5/10 on the held-out samples, against the dense and the original captions."""
    model.eval()
    metrics = {}
    with torch.no_grad():
        for field, (pixels, features) in held_out.items():
            out = model(pixel_values=pixels.to(device), llm_embeddings=features.to(device))
            recalls = image_text_recalls(out["image_embeds"].float().cpu(), out["text_embeds"].float().cpu())
            metrics.update({f"{field}_{name}": value for name, value in recalls.items()})
            metrics[f"{field}_eval_samples"] = float(len(features))
    model.train()
    return metrics
