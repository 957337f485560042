"""Reading masks as class indices: the four mask encodings, palettes and the class-range check.

A mask file is decoded like every image (:func:`~vggunet.data.images.open_image`: full decode,
EXIF orientation, one error naming the file) and then read in one of :data:`MASK_FORMATS`:

* ``"index"``: one channel whose values are the classes (grey, 16-bit, or P-mode PNGs, whose
  palette indices are the classes); an RGB file qualifies when its three channels are equal.
* ``"binary"``: like index, and 0/255 (or JPEG-noisy) masks are thresholded at mid-grey.
* ``"palette"``: RGB colours mapped to classes by a palette.
* ``"channel"``: the class is one channel of a colour file (``mask_channel``).

A ``.npy`` mask (read by :func:`~vggunet.data.images.read_npy`, without pickle) is an (H, W)
array of integers (or bools) read as ``"index"`` or ``"binary"``; it has no colours, so the
palette and channel encodings refuse it.

Every problem is a :class:`~vggunet.errors.DataError` naming the file and, for a wrong value or
colour, where it is; a bad argument is an :class:`~vggunet.errors.ArgumentError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vggunet import choices
from vggunet.checks import check_choice, check_int
from vggunet.data.images import NPY_SUFFIX, open_image, read_npy, reading
from vggunet.data.pairs import _short_list
from vggunet.errors import ArgumentError, DataError

__all__ = ["MASK_FORMATS", "check_mask_values", "load_mask", "mask_decoder"]

MASK_FORMATS = choices.MASK_FORMATS

MaskDecoder = Callable[[str | os.PathLike], np.ndarray]
Palette = tuple[np.ndarray, np.ndarray]
# What users pass as `palette=`: {class: (r, g, b)} or a list of (r, g, b), class = position.
PaletteSpec = Mapping[int, Sequence[int]] | Sequence[Sequence[int]]
"""Palette colours as sorted 24-bit RGB codes, and the class of each."""


def _single_channel(img: Image.Image, path: Path, fmt: str) -> np.ndarray:
    mode = img.mode
    if mode in ("L", "P", "I", "1") or mode.startswith("I;16"):
        # P-mode PNGs hold palette indices, which are exactly the class indices.
        return np.asarray(img).astype(np.int32)
    if mode in ("LA", "PA"):
        return np.asarray(img)[..., 0].astype(np.int32)
    if mode in ("RGB", "RGBA", "RGBX"):
        arr = np.asarray(img)[..., :3]
        diff = (arr[..., 0] != arr[..., 1]) | (arr[..., 0] != arr[..., 2])
        if diff.any():
            y, x = np.unravel_index(int(np.argmax(diff)), diff.shape)
            raise DataError(f"mask {path} is {mode} with differing channels (colour "
                            f"{tuple(int(v) for v in arr[y, x])} at row {y}, col {x}), so "
                            f"it is not a {fmt} mask; use mask_format='palette' with "
                            "palette=..., or mask_format='channel' with mask_channel=...")
        return arr[..., 0].astype(np.int32)
    raise DataError(f"mask {path} has unsupported image mode {mode!r} for "
                    f"mask_format={fmt!r}")


def _palette_colour(cls, colour) -> tuple[int, ...]:
    try:
        rgb = tuple(int(c) for c in colour)
    except (TypeError, ValueError):
        rgb = None
    if rgb is None or len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ArgumentError(f"palette colour for class {cls} must be (r, g, b) in 0..255, "
                            f"got {colour!r}")
    return rgb


def _normalise_palette(palette) -> Palette:
    if palette is None:
        raise ArgumentError("mask_format='palette' needs palette= (a dict {class: (r, g, b)} "
                            "or a list of (r, g, b) where the position is the class)")
    items = palette.items() if isinstance(palette, Mapping) else enumerate(palette)
    codes, classes = [], []
    for cls, colour in items:
        colour = _palette_colour(cls, colour)
        code = (colour[0] << 16) | (colour[1] << 8) | colour[2]
        if code in codes:
            other = classes[codes.index(code)]
            if other != int(cls):
                raise ArgumentError(f"palette colour {colour} is given for classes {other} "
                                    f"and {cls}")
            continue
        codes.append(code)
        classes.append(int(cls))
    order = np.argsort(codes)
    return np.asarray(codes, np.int64)[order], np.asarray(classes, np.int32)[order]


def _rgb(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def _palette_lookup(rgb: np.ndarray, lut: Palette, path: Path) -> np.ndarray:
    codes_sorted, classes = lut
    codes = ((rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8)
             | rgb[..., 2].astype(np.int64))
    pos = np.clip(np.searchsorted(codes_sorted, codes), 0, len(codes_sorted) - 1)
    found = codes_sorted[pos] == codes
    if not found.all():
        bad = ~found
        y, x = np.unravel_index(int(np.argmax(bad)), bad.shape)
        unknown = np.unique(codes[bad])
        colours = [_rgb(c) for c in unknown[:5].tolist()]
        known = [_rgb(c) for c in codes_sorted[:20].tolist()]
        raise DataError(f"mask {path}: colour {tuple(int(v) for v in rgb[y, x])} at row {y}, "
                        f"col {x} is not in the palette ({int(bad.sum())} pixels in "
                        f"{len(unknown)} unknown colour(s), e.g. {colours}); palette "
                        f"colours: {known}")
    return classes[pos]


def _binary(arr: np.ndarray) -> np.ndarray:
    if arr.size and arr.max() <= 1 and arr.min() >= 0:
        return arr
    # 8-bit 0/255 (or JPEG-noisy) masks threshold at mid-grey; 16-bit at mid-range.
    threshold = 128 if arr.max() <= 255 else 32768
    return (arr >= threshold).astype(np.int32)


def _channel(img: Image.Image, path: Path, mask_channel: int) -> np.ndarray:
    arr = np.asarray(img if img.mode in ("RGB", "RGBA", "L", "I", "LA")
                     or img.mode.startswith("I;16") else img.convert("RGBA"))
    if arr.ndim == 2:
        arr = arr[..., None]
    if not 0 <= mask_channel < arr.shape[-1]:
        raise DataError(f"mask {path} has {arr.shape[-1]} channel(s) (mode {img.mode}); "
                        f"mask_channel={mask_channel} is invalid, use 0..{arr.shape[-1] - 1}")
    return arr[..., mask_channel].astype(np.int32)


def _npy_mask(path: Path, mask_format: str) -> np.ndarray:
    """int32 (H, W) class indices of an ``.npy`` mask (index or binary)."""
    if mask_format not in ("index", "binary"):
        raise DataError(f"mask {path} is a .npy array of class indices; mask_format="
                        f"{mask_format!r} needs colours: use mask_format='index' or 'binary'")
    arr = read_npy(path, what="mask")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or 0 in arr.shape:
        raise DataError(f"mask {path} is an array of shape {arr.shape}; an array mask must be "
                        "(H, W) class indices")
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"mask {path} holds {arr.dtype} values; class indices must be "
                        "integers: save it with .astype(np.int32)")
    info = np.iinfo(np.int32)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise DataError(f"mask {path} has values outside the int32 range ({arr.min()} to "
                        f"{arr.max()}); class indices must fit int32")
    arr = arr.astype(np.int32)
    return _binary(arr) if mask_format == "binary" else arr


def _mask_array(img: Image.Image, path: Path, mask_format: str, lut: Palette | None,
                mask_channel: int) -> np.ndarray:
    if mask_format == "palette":
        return _palette_lookup(np.asarray(img.convert("RGB")), lut, path)
    if mask_format == "channel":
        return _channel(img, path, mask_channel)
    arr = _single_channel(img, path, mask_format)
    return _binary(arr) if mask_format == "binary" else arr


def mask_decoder(mask_format: str = "index", palette: PaletteSpec | None = None,
                 mask_channel: int = 0
                 ) -> MaskDecoder:
    """Checks a mask encoding once and returns the function that reads masks in it.

    Args:
        mask_format: one of :data:`MASK_FORMATS`.
        palette: for ``"palette"``: dict {class: (r, g, b)} or list of (r, g, b) where the
            position is the class.
        mask_channel: for ``"channel"``: the channel holding the class (0 = red).

    Returns:
        ``decode(path) -> int32 (H, W)`` class indices; it raises DataError naming the file.

    Raises:
        ArgumentError: unknown format, missing or malformed palette, negative channel.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "mask.png"
        >>> Image.fromarray(np.array([[0, 255, 255]], np.uint8)).save(path)
        >>> mask_decoder("binary")(path).tolist()
        [[0, 1, 1]]
    """
    mask_format = check_choice(mask_format, MASK_FORMATS, "mask_format")
    mask_channel = check_int(mask_channel, "mask_channel", minimum=0)
    lut = _normalise_palette(palette) if mask_format == "palette" else None

    def decode(path: str | os.PathLike) -> np.ndarray:
        path = Path(path)
        if path.suffix.lower() == NPY_SUFFIX:
            return _npy_mask(path, mask_format)
        img = open_image(path, what="mask")
        with reading(path, what="mask"):
            return _mask_array(img, path, mask_format, lut, mask_channel)

    return decode


def check_mask_values(mask: np.ndarray, path: str | os.PathLike, num_classes: int,
                      ignore_index: int | None = None) -> None:
    """Checks that every value of a mask is a class (or `ignore_index`).

    Args:
        mask: int (H, W) class indices.
        path: its file, for the message.
        num_classes: classes are 0..num_classes-1 (1: a binary model's 0 and 1).
        ignore_index: a label allowed besides the classes.

    Raises:
        DataError: values out of range; the message names them, the first position, the pixel
            count, and the likely fix for a 0/255 binary mask.
    """
    # One class is a binary sigmoid model: its masks hold 0 and 1, as the losses read them.
    num_classes = 2 if num_classes == 1 else num_classes
    bad = (mask < 0) | (mask >= num_classes)
    if ignore_index is not None:
        bad &= mask != ignore_index
    if bad.any():
        values = np.unique(mask[bad])
        y, x = np.unravel_index(int(np.argmax(bad)), bad.shape)
        ign = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        hint = ""
        if num_classes == 2 and set(values.tolist()) <= {255}:
            hint = ("; a 0/255 binary mask needs mask_format='binary' (CLI: --mask-format "
                    "binary)")
        raise DataError(f"mask {path} has value(s) {_short_list([str(v) for v in values])} "
                        f"outside the valid class range 0..{num_classes - 1}{ign} "
                        f"(first at row {y}, col {x}; {int(bad.sum())} pixels){hint}")


def load_mask(path: str | os.PathLike, mask_format: str = "index", *,
              num_classes: int | None = None, palette: PaletteSpec | None = None,
              mask_channel: int = 0,
              ignore_index: int | None = None) -> np.ndarray:
    """Read one mask as class indices.

    Args:
        path: mask file (an image, or a ``.npy`` (H, W) integer array: index or binary).
        mask_format: ``"index"``, ``"binary"``, ``"palette"`` or ``"channel"``.
        num_classes: when given, values must be < num_classes (or ignore_index).
        palette: for ``"palette"``: dict {class: (r, g, b)} or list of (r, g, b).
        mask_channel: for ``"channel"``: channel holding the class (0 = red).
        ignore_index: label value that is allowed beyond num_classes.

    Returns:
        int32 (H, W) class indices.

    Raises:
        DataError: unreadable file, colour not in palette, value out of range...
        ArgumentError: a bad `mask_format`, `palette` or `mask_channel`.
    """
    mask = mask_decoder(mask_format, palette, mask_channel)(path)
    if num_classes is not None:
        check_mask_values(mask, path, num_classes, ignore_index)
    return mask
