"""What the GPU and loader benches share at paper shapes: ViT-L/14-336 with the LLM2CLIP adapter (or a toy
of it), an H100's peak, ~500 x 620 px JPEGs, and train_vision's loader over them."""

from __future__ import annotations

import io

H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100 SXM
# Dense bf16 peaks (TFLOP/s, no sparsity) by the name torch.cuda.get_device_name reports; the first
# entry whose key the name contains wins, so the PCIe and NVL parts come before the plain names.
BF16_DENSE_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("L4", 121.0),
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak from its reported name; None for a GPU the table does not know (then no
    MFU is reported rather than one against a guessed peak)."""
    return next((peak for key, peak in BF16_DENSE_TFLOPS if key in device_name), None)


# Llama shapes the GPU benches build with random weights (nothing is downloaded).
LLAMA_3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
LLAMA_3_2_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 512,
}


def llm2clip_config(tiny: bool):
    """(LLM2CLIPConfig, llm_dim, image_size): ViT-L/14-336 + the paper's adapter, or a toy of them."""
    from transformers import CLIPVisionConfig

    from models.llm2clip import LLM2CLIPConfig

    shape = (
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
        | {"image_size": 64, "patch_size": 16}
        if tiny
        else {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
        }
        | {"image_size": 336, "patch_size": 14}
    )
    llm_dim = 128 if tiny else 4096
    config = LLM2CLIPConfig(
        vision_config={**CLIPVisionConfig(**shape).to_dict(), "model_type": "clip_vision_model"},
        llm_dim=llm_dim,
        adapter_width=128 if tiny else 1024,
        adapter_depth=2 if tiny else 4,
        projection_dim=64 if tiny else 1280,
    )
    return config, llm_dim, shape["image_size"]


def make_jpegs(count: int, width: int, height: int) -> list[bytes]:
    import numpy as np
    from PIL import Image, ImageDraw

    out = []
    for index in range(count):
        rng = np.random.default_rng(index)
        noise = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize((width, height), Image.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
            draw.ellipse((x, y, x + 60, y + 60), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def loader_feed(work: str, tiny: bool, batch: int, llm_dim: int, processes: int):
    """train_vision's loader over webdataset shards of ~500 x 620 JPEGs (64 px ones at --tiny) with
    sidecars of random llm_dim features, decoding in `processes` processes: endless CPU batches."""
    import io
    import tarfile
    from pathlib import Path

    import numpy as np
    import pyarrow.parquet as pq

    from ops.embedding_sidecar import sidecar_table
    from ops.image_transforms import ImageTransformConfig
    from pipelines.train_vision.data import training_batches
    from pipelines.train_vision.records import DataPosition, LoaderSettings

    count = batch * 4
    images = make_jpegs(count, 64, 64) if tiny else make_jpegs(count, 500, 620)
    rng = np.random.default_rng(0)
    keys = [f"{i:06d}" for i in range(count)]
    tar_path, sidecar = Path(work) / "00000.tar", Path(work) / "00000.parquet"
    with tarfile.open(tar_path, "w") as tar:
        for key, data in zip(keys, images):
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    vectors = [rng.standard_normal(llm_dim).astype(np.float32) for _ in keys]
    pq.write_table(
        sidecar_table(keys, {"dense": vectors}, {"dense": [False] * count}, llm_dim, "float16"), sidecar
    )
    transform = ImageTransformConfig(size_px=64 if tiny else 336)
    settings = LoaderSettings(batch, 1.0, batch, 0, None, transform=transform, decode_processes=processes)
    return training_batches([str(tar_path)], {"00000": str(sidecar)}, settings, 0, 1, DataPosition())
