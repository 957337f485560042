"""Reading image files: one decoding path for training data and for prediction.

Every image vggunet reads (training images and masks, their validation, prediction inputs) is
opened by :func:`open_image`: PIL decodes the whole file at once (so a truncated file fails here,
naming it, and never later inside ``tf.data``), the EXIF orientation is applied and, of a
multi-frame file, the first frame is kept. PIL reports a damaged file with many exception types;
:func:`reading` turns all of them, in one place, into the caller's error class naming the file.

EXIF orientation is applied on both sides: a photo comes out upright, as image viewers and
annotation tools show it (so as its mask was drawn), and a model sees the same pixels in
training and in prediction.

:func:`decode_image` makes float32 pixels in the raw range [0, 255] of the decoded image:
16-bit grey (and 32-bit integer grey within 0..65535) is scaled by 1/257, alpha is dropped,
palettes and other colour modes become RGB, and RGB becomes grey by ITU-R 601 luminance. The two
public readers share it and differ only where their callers need it:

* :func:`load_image` (training data): always (H, W, channels); raises
  :class:`~vggunet.errors.DataError`; refuses 32-bit float images (their range is unknown).
* :func:`read_image` (prediction): grey stays (H, W), for prediction to repeat it to the model's
  channels; raises :class:`~vggunet.errors.PredictionError`; returns 32-bit float images as stored.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vggunet.checks import check_choice, check_int
from vggunet.errors import ArgumentError, DataError, PredictionError, VggUnetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "check_channels",
    "decode_image",
    "load_image",
    "open_image",
    "read_image",
    "reading",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""The file types read as images and masks (case-insensitive), in data folders and by
`predict_folder`."""

IMAGE_SUFFIXES = IMAGE_EXTENSIONS
"""The prediction side's name of `IMAGE_EXTENSIONS` (the same tuple)."""

# A damaged file reaches PIL's decoders, which report it as any of these (struct.error from a
# short header, EOFError, IndexError from a bad palette, an `assert` in `convert` when a PLTE
# chunk is missing, ...); all mean "this file cannot be read".
_PIL_FAILURES = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                 AssertionError, struct.error, zlib.error, MemoryError)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_MODES = ("RGB", "RGBA", "RGBX", "RGBa")


@contextmanager
def reading(path: str | os.PathLike, error: type[VggUnetError] = DataError,
            what: str = "image") -> Iterator[None]:
    """Reports PIL's failures inside the block as one `error` naming `path`.

    vggunet's own errors pass through unchanged.

    Args:
        path: the file being read, for the message.
        error: the exception class to raise.
        what: what the file is ("image", "mask"), for the message.

    Yields:
        Nothing; the block runs inside.

    Example:
        >>> with reading("scan.png", what="mask"):
        ...     raise EOFError("no more data")
        Traceback (most recent call last):
        ...
        vggunet.errors.DataError: cannot read mask: scan.png is truncated or corrupt (EOFError: ...)
    """
    try:
        yield
    except VggUnetError:
        raise
    except UnidentifiedImageError as exc:
        raise error(f"cannot read {what}: {path} is not a readable image (PIL cannot identify "
                    "it; is it really an image?)") from exc
    except Image.DecompressionBombError as exc:
        raise error(f"cannot read {what}: {path} declares more pixels than PIL allows ({exc}); "
                    "if the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS") from exc
    except _PIL_FAILURES as exc:
        raise error(f"cannot read {what}: {path} is truncated or corrupt "
                    f"({type(exc).__name__}: {exc})") from exc


def open_image(path: str | os.PathLike, *, error: type[VggUnetError] = DataError,
               what: str = "image") -> Image.Image:
    """Opens and fully decodes an image file with PIL, upright (EXIF orientation applied).

    Args:
        path: the file.
        error: the exception class to raise.
        what: what the file is ("image", "mask"), for messages.

    Returns:
        The decoded PIL image (first frame of a multi-frame file), its file closed.

    Raises:
        error: the file is missing, not an image, truncated or corrupt, or declares more pixels
            than `PIL.Image.MAX_IMAGE_PIXELS` allows.
    """
    path = Path(path)
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise error(f"cannot read {what}: {path} {state}")
    with reading(path, error, what):
        with Image.open(path) as img:
            # Image.open reads the header only: decode now, so that a damaged file fails here.
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
        return img


def _native_pixels(img: Image.Image, path: Path, error: type[VggUnetError],
                   allow_float: bool) -> np.ndarray:
    """float32 (H, W, 1) for grey files, (H, W, 3) for colour ones, in the range [0, 255]."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float32)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise error(f"image {path} is 32-bit integer with values outside 0..65535; "
                        "convert it to 8- or 16-bit")
        return (arr / 257.0)[..., None]
    if mode == "F":
        if not allow_float:
            raise error(f"image {path} is a 32-bit float image, which is not supported; "
                        "save it as 8- or 16-bit")
        return np.asarray(img, dtype=np.float32)[..., None]
    if mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None]
    if mode == "LA":
        return np.asarray(img, dtype=np.float32)[..., :1]
    if mode in _RGB_MODES:
        return np.asarray(img, dtype=np.float32)[..., :3]
    return np.asarray(img.convert("RGB"), dtype=np.float32)  # P, PA, CMYK, YCbCr, ...


def decode_image(path: str | os.PathLike, channels: int | None = None, *,
                 error: type[VggUnetError] = DataError, allow_float: bool = False
                 ) -> np.ndarray:
    """The pixels of an image file, as every vggunet reader gets them.

    Args:
        path: the image file.
        channels: 1 (grey) or 3 (RGB) to convert to; None keeps the file's own: 1 for grey
            files, 3 for colour ones.
        error: the exception class to raise.
        allow_float: return 32-bit float images as stored instead of refusing them.

    Returns:
        float32 (H, W, C) pixels in the raw range [0, 255] (a float image: as stored).

    Raises:
        error: the file cannot be read (see :func:`open_image`), is a 32-bit integer image with
            values outside 0..65535, or a float image while `allow_float` is False.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "grey16.png"
        >>> Image.fromarray(np.array([[0, 65535]], np.uint16)).save(path)
        >>> decode_image(path).tolist(), decode_image(path, 3).shape
        ([[[0.0], [255.0]]], (1, 2, 3))
    """
    path = Path(path)
    img = open_image(path, error=error)
    with reading(path, error):
        arr = _native_pixels(img, path, error, allow_float)
    if channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 1 and arr.shape[-1] == 3:
        arr = (arr @ _LUMA)[..., None]
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_channels(channels: int, error: type[VggUnetError] = ArgumentError) -> int:
    """Checks a channel count: 1 (grey) or 3 (RGB).

    Args:
        channels: the value to check.
        error: the exception class to raise.

    Returns:
        The channel count as a Python int.

    Example:
        >>> check_channels(2)
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: channels must be one of (1, 3), got 2.
    """
    return check_choice(check_int(channels, "channels", error=error), (1, 3), "channels",
                        error=error)


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Reads one training image as the data pipeline does.

    Args:
        path: image file.
        channels: 1 or 3.

    Returns:
        float32 (H, W, channels) in the raw range [0, 255].

    Raises:
        DataError: missing, unreadable, truncated or unsupported file (it is named).
        ArgumentError: `channels` is not 1 or 3.
    """
    return decode_image(path, check_channels(channels))


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Reads an image with PIL as float32 raw pixels, for prediction.

    Grey images stay (H, W) (predict repeats them to the model's channels); with `channels=3`
    colour images become (H, W, 3) RGB (alpha dropped, palettes expanded); with `channels=1`
    everything is converted to grey (ITU-R 601 luminance, as in training). 16-bit images are
    scaled to 0-255; 32-bit float images are returned as stored. EXIF orientation is applied; of
    a multi-frame file only the first frame is read. The pixels equal :func:`load_image`'s.

    Args:
        path: the image file.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        float32 (H, W) or (H, W, 3) raw pixel values.

    Raises:
        PredictionError: the file is missing, not an image, truncated or corrupt, or declares
            more pixels than PIL's `Image.MAX_IMAGE_PIXELS` allows; `channels` is not 1 or 3.
    """
    channels = check_channels(channels, PredictionError)
    pixels = decode_image(path, 1 if channels == 1 else None, error=PredictionError,
                          allow_float=True)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
