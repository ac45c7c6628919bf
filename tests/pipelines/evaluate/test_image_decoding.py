"""evaluate decodes images as training does (ops.image_transforms.decode_rgb), from bytes or a path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ops.image_decode import decode_rgb
from pipelines.evaluate.run import _open


def _png16(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), value, dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_16_bit_image_is_scaled_not_clipped_and_equals_trainings_decoding(tmp_path):
    data = _png16(32768)  # half scale: PIL's own convert("RGB") would clip it to white
    from_bytes = np.asarray(_open(data))
    assert from_bytes.shape == (4, 4, 3) and 120 <= from_bytes.max() <= 135
    assert np.array_equal(from_bytes, np.asarray(decode_rgb(data)))
    path = tmp_path / "half.png"
    path.write_bytes(data)
    assert np.array_equal(np.asarray(_open(path)), from_bytes)


def test_an_undecodable_image_names_its_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot be decoded"):
        _open(path)
