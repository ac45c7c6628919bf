"""Synthetic datasets for bench/scale.py, written once per size under a work folder: a url table, a download
artifact's per-shard status parquet (captions of recipe-like length), webdataset tars of tiny JPEGs with
their status tables and embedding sidecars, and a finetune_text pair file. Plain pyarrow, numpy, PIL."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SAMPLES_PER_SHARD = 1000
SIDECAR_DIM = 8
WORDS = [
    "a",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "cube",
    "sphere",
    "cone",
    "on",
    "left",
    "right",
    "of",
    "the",
    "above",
    "below",
    "near",
    "wooden",
    "metal",
]


def _caption(rng: np.random.Generator, words: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), words))


def url_table(work: Path, size: int) -> Path:
    """size rows: 1% bad urls, 1% repeats of earlier urls."""
    path = work / f"urls-{size}.parquet"
    if not path.exists():
        index = np.arange(size)
        urls = np.char.add(np.char.add("http://images.example/", index.astype(str)), ".jpg").astype(object)
        urls[index % 100 == 7] = "not a url"
        repeats = index[index % 100 == 13]
        urls[repeats] = urls[np.maximum(repeats - 50, 0)]
        captions = [f"a photo of item {i}" for i in range(size)]
        table = pa.table({"url": pa.array(urls, pa.string()), "caption": captions})
        pq.write_table(table, path, row_group_size=65536)  # as writers of large tables do
    return path


def download_artifact(work: Path, size: int) -> Path:
    """shards/{n:05d}.parquet as img2dataset writes them: key, status, caption, a 60-word dense caption."""
    root = work / f"download-{size}"
    if not (root / "_done").exists():
        rng = np.random.default_rng(size)
        (root / "shards").mkdir(parents=True, exist_ok=True)
        for shard in range(size // SAMPLES_PER_SHARD):
            keys = [f"{shard:05d}{i:04d}" for i in range(SAMPLES_PER_SHARD)]
            table = {
                "key": keys,
                "status": ["success"] * SAMPLES_PER_SHARD,
                "caption": [_caption(rng, 8) for _ in keys],
                "dense_caption": [_caption(rng, 60) for _ in keys],
            }
            pq.write_table(pa.table(table), root / "shards" / f"{shard:05d}.parquet")
        (root / "_done").touch()
    return root


def _jpeg(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def vision_shards(work: Path, size: int) -> Path:
    """shards/{n:05d}.tar (jpg, txt), their status tables and sidecars/{n:05d}.parquet (8-dim features)."""
    from ops.embedding_sidecar import sidecar_table

    root = work / f"vision-{size}"
    if (root / "_done").exists():
        return root
    rng = np.random.default_rng(size)
    jpegs = [_jpeg(rng) for _ in range(64)]  # a pool: generation stays fast; the bytes are read all the same
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / "sidecars").mkdir(exist_ok=True)
    for shard in range(size // SAMPLES_PER_SHARD):
        keys = [f"{shard:05d}{i:04d}" for i in range(SAMPLES_PER_SHARD)]
        captions = [_caption(rng, 8) for _ in keys]
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tar:
            for index, (key, caption) in enumerate(zip(keys, captions)):
                for name, data in ((f"{key}.jpg", jpegs[index % 64]), (f"{key}.txt", caption.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        status = {"key": keys, "status": ["success"] * len(keys), "caption": captions}
        pq.write_table(pa.table(status), root / "shards" / f"{shard:05d}.parquet")
        vectors = [rng.standard_normal(SIDECAR_DIM).astype(np.float32) for _ in keys]
        fields = {"original": vectors, "dense": vectors}
        present = {f: [False] * len(keys) for f in fields}
        table = sidecar_table(keys, fields, present, SIDECAR_DIM, "float32")
        pq.write_table(table, root / "sidecars" / f"{shard:05d}.parquet")
    (root / "_done").touch()
    return root


def pair_file(work: Path, size: int) -> Path:
    """pairs/train.parquet of `size` pairs in row groups of 4,096 (what finetune_text's driver writes)."""
    path = work / f"pairs-{size}.parquet"
    if not path.exists():
        rng = np.random.default_rng(size + 1)
        table = pa.table(
            {
                "key": [f"{i:09d}" for i in range(size)],
                "kind": ["original_dense"] * size,
                "caption_1": [_caption(rng, 8) for _ in range(size)],
                "caption_2": [_caption(rng, 60) for _ in range(size)],
            }
        )
        pq.write_table(table, path, row_group_size=4096)
    return path
