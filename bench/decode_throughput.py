"""Vision loader cost at paper shapes: JPEG decode + random-resized crop to 336 px per CPU core, with 1 and
2 processes, and from it the CPU cores one H100 needs to keep ViT-L/14-336 training at 40% MFU.

    python -m bench.decode_throughput [--images 256] [--width 500] [--height 620]

The images are JPEGs of ~500 x 620 px (quality 90, a noisy texture under shapes, so they do not
compress to nothing), decoded and augmented by train_vision's own collate path (decode_rgb +
train_transform, CLIP normalisation) on the training crop scale (0.9, 1). The FLOPs of one training
image (forward and backward of ViT-L/14-336 with the LLM2CLIP adapter, batch 2, counted on the meta
device: nothing is computed) give the images/s an H100 consumes at 40% of its 989 dense bf16 TFLOP/s;
cores per GPU = that rate / the per-core decode rate with 2 processes measured here.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ProcessPoolExecutor

from bench.paper_shapes import H100_BF16_TFLOPS, llm2clip_config, make_jpegs
from bench.result import default_json, machine, write_result

TARGET_MFU = 0.4
SIZE_PX = 336


def decode_and_augment(images: list[bytes], seed: int) -> int:
    """train_vision's per-image work: decode_rgb, then train_transform to SIZE_PX."""
    import torch

    from ops.image_decode import decode_rgb
    from ops.image_transforms import ImageTransformConfig, train_transform

    torch.set_num_threads(1)
    config = ImageTransformConfig(size_px=SIZE_PX, train_scale=(0.9, 1.0))
    rng = random.Random(seed)
    for data in images:
        train_transform(decode_rgb(data), config, rng)
    return len(images)


def per_core_rate(images: list[bytes], processes: int) -> float:
    """Images/s per process over all the images, each process warmed up first (imports, one image). One
    process runs in a pool too, so that 1 and 2 are measured the same way."""
    parts = [images[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(decode_and_augment, [p[:1] for p in parts], range(processes)))
        began = time.perf_counter()
        done = sum(pool.map(decode_and_augment, parts, range(processes)))
    return done / (time.perf_counter() - began) / processes


def training_flops_per_image() -> float:
    """Forward + backward FLOPs of one ViT-L/14-336 + adapter training image, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.llm2clip import LLM2CLIPModel
    from ops.clip_loss import clip_loss

    config, _, _ = llm2clip_config(tiny=False)
    batch = 2
    with torch.device("meta"):
        model = LLM2CLIPModel(config)
        pixels = torch.randn(batch, 3, SIZE_PX, SIZE_PX)
        features = torch.randn(batch, 4096)
    with FlopCounterMode(display=False) as counter:
        out = model(pixel_values=pixels, llm_embeddings=features)
        clip_loss(out["image_embeds"], out["text_embeds"], out["logit_scale"]).backward()
    return counter.get_total_flops() / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=620)
    parser.add_argument("--json", default=default_json("decode_throughput"))
    args = parser.parse_args()

    images = make_jpegs(args.images, args.width, args.height)
    one = per_core_rate(images, 1)
    two = per_core_rate(images, 2)
    flops = training_flops_per_image()
    gpu_images_per_s = TARGET_MFU * H100_BF16_TFLOPS * 1e12 / flops
    cores = gpu_images_per_s / two  # loaders run many processes: the parallel per-core rate
    size = f"{args.width}x{args.height} JPEG -> {SIZE_PX} px"
    rows = [
        {"name": f"decode + augment, 1 process ({size})", "figure": round(one, 1), "unit": "img/s/core"},
        {"name": f"decode + augment, 2 processes ({size})", "figure": round(two, 1), "unit": "img/s/core"},
        {
            "name": "CPU cores per H100, ViT-L/14-336 at 40% MFU",
            "figure": round(cores, 1),
            "unit": "cores",
            "note": f"{gpu_images_per_s:.0f} img/s per GPU ({flops / 1e9:.0f} GFLOP/image to train)",
        },
    ]
    result = {"bench": "decode_throughput", "machine": machine(), "images": args.images, "rows": rows}
    write_result(args.json, result)
    print(f"\n{args.images} JPEGs {size}, {result['machine']}")
    for row in rows:
        print(f"{row['name']:<62}{row['figure']:>10} {row['unit']}  {row.get('note', '')}")


if __name__ == "__main__":
    main()
