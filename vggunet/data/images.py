"""Reading image files: one decoding path for training data and for prediction.

Every image vggunet reads (training images and masks, their validation, prediction inputs) is
opened by :func:`open_image`: PIL decodes the whole file at once (so a truncated file fails here,
naming it, and never later inside ``tf.data``), the EXIF orientation is applied and, of a
multi-frame file, the first frame is kept. PIL reports a damaged file with many exception types;
:func:`reading` turns all of them, in one place, into the caller's error class naming the file.
A ``.npy`` file is read by :func:`read_npy` instead (``np.load`` without pickle): an (H, W) or
(H, W, C) array of real numbers, for images with any number of channels.

EXIF orientation is applied on both sides: a photo comes out upright, as image viewers and
annotation tools show it (so as its mask was drawn), and a model sees the same pixels in
training and in prediction.

:func:`decode_image` makes float32 pixels in the raw range [0, 255] of the decoded image:
16-bit grey (and 32-bit integer grey within 0..65535) is scaled by 1/257, palettes and other
colour modes become RGB. Channels (:func:`convert_channels`): grey and RGB convert into each other
(RGB to grey by ITU-R 601 luminance, grey repeated to RGB) and alpha is dropped when 1 or 3
channels are asked for; any other count C is never converted: the file must have C channels (an
(H, W, C) ``.npy`` array, or a PIL file with its extra band: LA = 2, RGBA/RGBX = 4). ``.npy``
values are taken as stored, not scaled. The two public readers share it and differ only where
their callers need it:

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

from vggunet.checks import check_int
from vggunet.errors import ArgumentError, DataError, PredictionError, VggUnetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "NPY_SUFFIX",
    "check_channels",
    "convert_channels",
    "decode_image",
    "load_image",
    "open_image",
    "read_image",
    "read_npy",
    "reading",
]

NPY_SUFFIX = ".npy"
"""Files with this suffix (any case) hold a numpy array, read by :func:`read_npy`."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", NPY_SUFFIX)
"""The file types read as images and masks (case-insensitive), in data folders and by
`predict_folder`; ``.npy``: an (H, W) or (H, W, C) image array, an (H, W) integer mask."""

IMAGE_SUFFIXES = IMAGE_EXTENSIONS
"""The prediction side's name of `IMAGE_EXTENSIONS` (the same tuple)."""

# A damaged file reaches PIL's decoders, which report it as any of these (struct.error from a
# short header, EOFError, IndexError from a bad palette, an `assert` in `convert` when a PLTE
# chunk is missing, ...); all mean "this file cannot be read".
_PIL_FAILURES = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                 AssertionError, struct.error, zlib.error, MemoryError)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_MODES = ("RGB", "RGBA", "RGBX", "RGBa")
_NPY_MAGIC = b"\x93NUMPY"


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


def read_npy(path: str | os.PathLike, *, error: type[VggUnetError] = DataError,
             what: str = "image") -> np.ndarray:
    """Loads a ``.npy`` file of real numbers (bool, integer or float), without pickle.

    Args:
        path: the ``.npy`` file.
        error: the exception class to raise.
        what: what the file is ("image", "mask"), for messages.

    Returns:
        The stored array, its dtype and shape unchanged.

    Raises:
        error: the file is missing, not a ``.npy`` array (an ``.npz`` archive, a pickle, a
            damaged file), an object array, or holds no real numbers (complex, text, records).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "tile.npy"
        >>> np.save(path, np.array(["a", "b"]))
        >>> read_npy(path)
        Traceback (most recent call last):
        ...
        vggunet.errors.DataError: image .../tile.npy holds <U1 values; an array image must hold
        real numbers (bool, integer or float)
    """
    path = Path(path)
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise error(f"cannot read {what}: {path} {state}")
    try:
        with open(path, "rb") as file:
            magic = file.read(len(_NPY_MAGIC))
        if magic != _NPY_MAGIC:
            kind = "an .npz archive" if magic.startswith(b"PK") else "not a .npy file"
            raise error(f"cannot read {what}: {path} is {kind} (it does not start with the .npy "
                        "magic bytes); save each array with np.save")
        # allow_pickle=False: an object array would be unpickled, which can run any code.
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        if "allow_pickle" in str(exc):
            raise error(f"cannot read {what}: {path} is an object (pickled) array, which "
                        "vggunet does not load; save a numeric array, e.g. "
                        "np.save(path, array.astype(np.float32))") from exc
        raise error(f"cannot read {what}: {path} is not a readable .npy array "
                    f"({type(exc).__name__}: {exc})") from exc
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)
            or np.issubdtype(array.dtype, np.floating)):
        raise error(f"{what} {path} holds {array.dtype} values; an array {what} must hold "
                    "real numbers (bool, integer or float)")
    return array


def _npy_pixels(path: Path, error: type[VggUnetError]) -> np.ndarray:
    """float32 (H, W, C) of an image array, values as stored (finite, not scaled)."""
    array = read_npy(path, error=error)
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise error(f"image {path} is an array of shape {array.shape}; an array image must be "
                    "(H, W) or (H, W, C) with H, W, C >= 1")
    if array.ndim == 2:
        array = array[..., None]
    with np.errstate(over="ignore"):  # float64 values beyond float32 become inf: refused below
        pixels = array.astype(np.float32)
    bad = ~np.isfinite(pixels)
    if bad.any():
        y, x, c = (int(i) for i in np.argwhere(bad)[0])
        raise error(f"image {path} has {int(bad.sum())} NaN or infinite value(s) (as float32; "
                    f"the first at row {y}, col {x}, channel {c}); replace them, e.g. with "
                    "np.nan_to_num, before using the file")
    return pixels


def _native_pixels(img: Image.Image, path: Path, error: type[VggUnetError],
                   allow_float: bool, extra: bool) -> np.ndarray:
    """float32 (H, W, 1) for grey files, (H, W, 3) for colour ones, in the range [0, 255].

    With `extra`, a file's alpha/padding band is kept: LA gives 2 channels, RGBA/RGBX and
    palettes with transparency 4.
    """
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
    if mode in ("LA", "La"):
        return np.asarray(img, dtype=np.float32)[..., :2 if extra else 1]
    if mode in _RGB_MODES:
        return np.asarray(img, dtype=np.float32)[..., :4 if extra else 3]
    if extra and (mode == "PA" or (mode == "P" and "transparency" in img.info)):
        return np.asarray(img.convert("RGBA"), dtype=np.float32)  # the palette's alpha
    return np.asarray(img.convert("RGB"), dtype=np.float32)  # P, PA, CMYK, YCbCr, ...


def _file_pixels(path: Path, error: type[VggUnetError], allow_float: bool,
                 extra: bool) -> np.ndarray:
    """float32 (H, W, C) of an image file as stored (see :func:`_native_pixels`)."""
    if path.suffix.lower() == NPY_SUFFIX:
        return _npy_pixels(path, error)
    img = open_image(path, error=error)
    with reading(path, error):
        return _native_pixels(img, path, error, allow_float, extra)


def convert_channels(pixels: np.ndarray, channels: int | None, path: str | os.PathLike, *,
                     error: type[VggUnetError] = DataError, keep_grey: bool = False
                     ) -> np.ndarray:
    """Gives (H, W, C) pixels `channels` channels, by the one conversion rule of vggunet.

    Grey (1) and RGB (3) convert into each other: grey is repeated, RGB becomes grey by ITU-R 601
    luminance. Every other count must already match: 2-band, 4-band or 13-band data is never
    guessed into another count.

    Args:
        pixels: (H, W, C) pixels.
        channels: the channel count wanted; None keeps the pixels as they are.
        path: the file they come from, for the message.
        error: the exception class to raise.
        keep_grey: with `channels=3`, leave one-channel pixels as they are (the caller
            repeats them later, e.g. the data pipeline after augmenting).

    Returns:
        The pixels with `channels` channels (or one, with `keep_grey`).

    Raises:
        error: the pixels have another channel count that is not converted; the message names
            the file, its count and the one asked for.

    Example:
        >>> convert_channels(np.zeros((2, 2, 1)), 3, "a.png").shape
        (2, 2, 3)
        >>> convert_channels(np.zeros((2, 2, 3)), 4, "b.png")
        Traceback (most recent call last):
        ...
        vggunet.errors.DataError: image b.png has 3 channel(s), not the 4 asked for (channels=4);
        only grey (1) and RGB (3) are converted into each other: give files with exactly 4
        channels (an (H, W, 4) .npy array, or an RGBA/RGBX image)
    """
    have = pixels.shape[-1]
    if channels is None or have == channels:
        return pixels
    if channels == 3 and have == 1:
        return pixels if keep_grey else np.repeat(pixels, 3, axis=-1)
    if channels == 1 and have == 3:
        return (pixels @ _LUMA)[..., None]
    kinds = {1: "a grey image", 2: "an LA (grey + alpha) image", 3: "an RGB image",
             4: "an RGBA/RGBX image"}
    files = f"an (H, W, {channels}) .npy array" + (
        f", or {kinds[channels]}" if channels in kinds else "")
    raise error(f"image {path} has {have} channel(s), not the {channels} asked for "
                f"(channels={channels}); only grey (1) and RGB (3) are converted into each "
                f"other: give files with exactly {channels} channels ({files})")


def decode_image(path: str | os.PathLike, channels: int | None = None, *,
                 error: type[VggUnetError] = DataError, allow_float: bool = False,
                 keep_grey: bool = False) -> np.ndarray:
    """The pixels of an image file, as every vggunet reader gets them.

    Args:
        path: the image file (PIL formats, or ``.npy``: an (H, W) or (H, W, C) array).
        channels: the channel count to give (see :func:`convert_channels`); for 1 or 3 alpha
            is dropped, for another count C the file must have C channels (an LA file counts
            2, RGBA/RGBX 4). None keeps the file's own: 1 for grey files, 3 for colour ones
            (alpha dropped), an array's own count.
        error: the exception class to raise.
        allow_float: return 32-bit float images as stored instead of refusing them.
        keep_grey: with `channels=3`, a grey file stays one channel (the caller repeats it).

    Returns:
        float32 (H, W, C) pixels in the raw range [0, 255] (a float image or a ``.npy`` array:
        as stored).

    Raises:
        error: the file cannot be read (see :func:`open_image`, :func:`read_npy`), is a 32-bit
            integer image with values outside 0..65535, a float image while `allow_float` is
            False, an array with NaN/inf or of another shape than (H, W[, C]), or has a channel
            count that `channels` does not convert.
        ArgumentError: `channels` is not an integer >= 1 (or None).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "grey16.png"
        >>> Image.fromarray(np.array([[0, 65535]], np.uint16)).save(path)
        >>> decode_image(path).tolist(), decode_image(path, 3).shape
        ([[[0.0], [255.0]]], (1, 2, 3))
    """
    path = Path(path)
    if channels is not None:
        channels = check_channels(channels)
    arr = _file_pixels(path, error, allow_float, extra=channels not in (None, 1, 3))
    arr = convert_channels(arr, channels, path, error=error, keep_grey=keep_grey)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_channels(channels: int, error: type[VggUnetError] = ArgumentError) -> int:
    """Checks a channel count: any integer >= 1 (1 grey, 3 RGB, others e.g. RGB + NIR).

    Args:
        channels: the value to check.
        error: the exception class to raise.

    Returns:
        The channel count as a Python int.

    Example:
        >>> check_channels(4)
        4
        >>> check_channels(0)
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: channels must be a positive integer, got 0.
    """
    return check_int(channels, "channels", error=error)


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Reads one training image as the data pipeline does.

    Args:
        path: image file (PIL formats or ``.npy``).
        channels: 1 (grey), 3 (RGB), or any other count the file has (see
            :func:`decode_image`).

    Returns:
        float32 (H, W, channels) in the raw range [0, 255] (``.npy``: values as stored).

    Raises:
        DataError: missing, unreadable, truncated or unsupported file, or one with another
            channel count that is not converted (it is named).
        ArgumentError: `channels` is not an integer >= 1.
    """
    return decode_image(path, check_channels(channels))


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Reads an image with PIL (or a ``.npy`` array) as float32 raw pixels, for prediction.

    Grey images stay (H, W) (predict repeats them to the model's channels); with `channels=3`
    colour images become (H, W, 3) RGB (alpha dropped, palettes expanded); with `channels=1`
    everything is converted to grey (ITU-R 601 luminance, as in training); any other count C
    needs files with C channels (an (H, W, C) ``.npy`` array; LA for 2, RGBA for 4). 16-bit
    images are scaled to 0-255; 32-bit float images and ``.npy`` arrays are returned as stored.
    EXIF orientation is applied; of a multi-frame file only the first frame is read. The pixels
    equal :func:`load_image`'s.

    Args:
        path: the image file.
        channels: 1 (grey), 3 (RGB) or another channel count the files have.

    Returns:
        float32 (H, W) or (H, W, C) raw pixel values.

    Raises:
        PredictionError: the file is missing, not an image, truncated or corrupt, or declares
            more pixels than PIL's `Image.MAX_IMAGE_PIXELS` allows; a channel count that is not
            converted; `channels` is not an integer >= 1.
    """
    channels = check_channels(channels, PredictionError)
    pixels = decode_image(path, channels, error=PredictionError, allow_float=True,
                          keep_grey=True)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
