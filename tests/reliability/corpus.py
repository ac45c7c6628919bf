"""The bad-input corpus, generated: images, url tables, tar shards and sidecars that real datasets contain.

Every generator returns bytes or writes files under a folder the caller owns; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ops.embedding_sidecar import sidecar_table


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _picture(width: int = 48, height: int = 40) -> Image.Image:
    """A small RGB image with structure (a gradient and a block), so conversions can be checked."""
    array = np.zeros((height, width, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    array[height // 4 : height // 2, width // 4 : width // 2] = (20, 40, 220)
    return Image.fromarray(array)


# name -> (bytes, what the decoder must make of it: "rgb" or the rejection reason)
def bad_images(huge_side_px: int = 12_000) -> dict[str, tuple[bytes, str]]:
    picture = _picture()
    jpeg = _encode(picture, "JPEG", quality=90)
    sixteen = (np.asarray(picture.convert("L"), np.uint16) * 257).astype(np.uint16)
    frames = [picture, Image.new("RGB", picture.size, (255, 0, 0))]
    return {
        "truncated_jpeg": (jpeg[: len(jpeg) // 3], "undecodable_image"),
        "zero_byte": (b"", "empty_image"),
        "not_an_image": (b"<html>404 not found</html>", "undecodable_image"),
        "cmyk_jpeg": (_encode(picture.convert("CMYK"), "JPEG", quality=95), "rgb"),
        "grayscale_png": (_encode(picture.convert("L"), "PNG"), "rgb"),
        "16bit_png": (_encode(Image.fromarray(sixteen), "PNG"), "rgb"),
        "rgba_png": (_encode(picture.convert("RGBA"), "PNG"), "rgb"),
        "animated_gif": (_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), "rgb"),
        # A bomb in miniature: few bytes, huge pixel count (PNG of one colour compresses ~1000x).
        "huge_png": (_encode(Image.new("L", (huge_side_px, huge_side_px)), "PNG"), "too_many_pixels"),
    }


def reference_rgb() -> np.ndarray:
    return np.asarray(_picture(), np.float32)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, caption: str, meta: dict | None = None) -> list[tuple[str, bytes]]:
    return [
        (f"{key}.jpg", _encode(_picture(), "JPEG")),
        (f"{key}.txt", caption.encode()),
        (f"{key}.json", json.dumps({"key": key, **(meta or {})}).encode()),
    ]


def good_shard(path: Path, keys: list[str]) -> Path:
    members = [
        m for key in keys for m in sample_members(key, f"a photo {key}", {"dense_caption": f"dense {key}"})
    ]
    return write_tar(path, members)


def truncated_shard(path: Path, keys: list[str], between_members: bool = False) -> Path:
    """A shard cut as a partial copy leaves it: in the middle of a member's data, or exactly where a
    member's header starts (which tar readers take for a clean end)."""
    good_shard(path, keys)
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        member = tar.getmembers()[-3]  # the last sample's image
        cut = member.offset if between_members else member.offset_data + member.size // 2
    path.write_bytes(data[:cut])
    return path


def repeated_key_shard(path: Path) -> Path:
    """k1, k2, k1 again (a repeated sample) and k3 whose jpg appears twice (a repeated member)."""
    members = [
        *sample_members("k1", "first k1", {"dense_caption": "dense first k1"}),
        *sample_members("k2", "k2", {"dense_caption": "dense k2"}),
        *sample_members("k1", "second k1", {"dense_caption": "dense second k1"}),
        *sample_members("k3", "k3", {"dense_caption": "dense k3"}),
        ("k3.jpg", _encode(_picture(), "JPEG")),
    ]
    return write_tar(path, members)


def bad_json_shard(path: Path) -> Path:
    return write_tar(path, [*sample_members("k1", "k1"), ("k2.jpg", b"x"), ("k2.json", b"{not json")])


def sidecar(path: Path, keys: list[str], dim: int) -> Path:
    vectors = [np.full(dim, i, np.float32) for i in range(len(keys))]
    table = sidecar_table(keys, {"original": vectors}, {"original": [False] * len(keys)}, dim, "float16")
    pq.write_table(table, path)
    return path


def url_rows(url_for) -> list[dict[str, str]]:
    """The url-table corpus: (url, caption, what the download stage must make of the row)."""
    long_caption = "a very long caption " * 5000  # 100,000 characters
    return [
        {"url": url_for("good.jpg"), "caption": "a plain caption", "expect": "success"},
        {
            "url": url_for("unicode.jpg"),
            "caption": "Ein Hund 🐕 läuft — 日本語のキャプション",
            "expect": "success",
        },
        {"url": url_for("long.jpg"), "caption": long_caption, "expect": "success"},
        {"url": url_for("empty_caption.jpg"), "caption": "", "expect": "success"},
        {"url": url_for("good.jpg"), "caption": "the same url again", "expect": "duplicate_url"},
        {"url": "ftp://127.0.0.1/x.jpg", "caption": "ftp", "expect": "bad_url"},
        {"url": "file:///etc/passwd", "caption": "a local file", "expect": "bad_url"},
        {"url": "not a url at all", "caption": "junk", "expect": "bad_url"},
        {"url": "", "caption": "no url", "expect": "bad_url"},
    ]


def write_url_table(
    path: Path, rows: list[dict[str, str]], drop: tuple[str, ...] = (), extra: bool = False
) -> Path:
    table = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k != "expect" and k not in drop} for r in rows]
    )
    if extra:
        table = table.append_column("unrequested_extra", pa.array(["x"] * table.num_rows))
    pq.write_table(table, path)
    return path
