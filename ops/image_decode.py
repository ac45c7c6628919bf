"""Image bytes to 8-bit RGB pixels, with a reason a stage can count when they cannot be: PIL and numpy,
no torch, so download's and recaption's checks load no deep-learning library."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

# PIL's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS); checked from the header, before any
# pixel is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """An image that cannot become RGB pixels; `reason` is a rejection reason a stage can count."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason  # empty_image, too_many_pixels or undecodable_image


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Any still or animated (first frame) image PIL reads, as 8-bit RGB: grayscale, palette, CMYK,
    16-bit and alpha images are converted; 16-bit samples are scaled, not clipped, to 8 bits."""
    if not data:
        raise ImageDecodeError("empty_image", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    "too_many_pixels", f"{width}x{height} px is above the limit of {max_pixels} px"
                )
            image.seek(0)
            image.load()
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("undecodable_image", "not an image format PIL knows") from None
    except Exception as err:  # PIL raises many types for bad bytes; all mean "not an image we can use"
        raise ImageDecodeError("undecodable_image", f"{type(err).__name__}: {err}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: PIL's convert("RGB") would clip everything above 255 to white.
        array = np.asarray(image, dtype=np.uint32 if image.mode == "I" else np.uint16)
        scale = 257.0 if image.mode != "I" or array.max() > 255 else 1.0
        image = Image.fromarray(np.clip(array / scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return image.convert("RGB")
