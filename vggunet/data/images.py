"""Reading images for prediction."""

from __future__ import annotations

import os

import numpy as np

from vggunet.errors import PredictionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""The file types `predict_folder` reads (case-insensitive)."""


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Reads an image with PIL as float32 raw pixels.

    Grey images stay (H, W) (predict repeats them to the model's channels); with `channels=3`
    colour images become (H, W, 3) RGB (alpha dropped, palettes expanded); with `channels=1`
    everything is converted to grey. 16-bit images are scaled to 0-255. EXIF orientation is
    applied; of a multi-frame file only the first frame is read.

    Args:
        path: the image file.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        float32 (H, W) or (H, W, 3) raw pixel values.

    Raises:
        PredictionError: the file is missing, not an image, truncated or corrupt, or declares
            more pixels than PIL's `Image.MAX_IMAGE_PIXELS` allows.
    """
    import struct
    import zlib

    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in (1, 3):
        raise PredictionError(f"channels must be 1 or 3, got {channels!r}.")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I;16"):
                return np.asarray(img, dtype=np.float32) / 257.0
            if img.mode in ("I", "F"):
                if channels == 3 or img.mode == "F":
                    return np.asarray(img, dtype=np.float32)
            if channels == 1 or img.mode in ("L", "1", "LA"):
                return np.asarray(img.convert("L"), dtype=np.float32)
            return np.asarray(img.convert("RGB"), dtype=np.float32)
    # PIL reports damaged files with many exception types (ValueError for a short chunk,
    # struct.error, EOFError, DecompressionBombError ...); all mean "cannot read this image".
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError,
            TypeError, KeyError, AssertionError, struct.error, zlib.error, MemoryError,
            Image.DecompressionBombError) as error:
        raise PredictionError(f"cannot read image '{path}': {type(error).__name__}: "
                              f"{error}") from error
