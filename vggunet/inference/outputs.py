"""Writing prediction results: class-index PNGs, colour maps and overlays (optionally with a
legend of class names and colours), atomically; reading class-name files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vggunet.checks import check_number
from vggunet.errors import DataError, OutputError, PredictionError
from vggunet.fileio import atomic_write, make_folder
from vggunet.inference.predict import _check_finite


def _make_output_folder(folder: Path) -> None:
    """Creates `folder` (and its parents) or raises `OutputError` naming it."""
    make_folder(folder, what="the output folder ", error=OutputError)


def _prepare_folder(path: Path) -> None:
    folder = path.parent
    _make_output_folder(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the output folder '{folder}' is not writable.")


def _write_png(pil_image: Any, path: str | os.PathLike) -> Path:
    """Writes a PIL image as PNG atomically (`vggunet.fileio.atomic_write`)."""
    path = Path(path)
    _prepare_folder(path)
    return atomic_write(path, lambda stream: pil_image.save(stream, format="PNG"),
                        error=OutputError, what="output ")


def _check_mask(mask: Any) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise PredictionError(
            f"a mask must be (H, W) or (H, W, 1) class indices, got {array.shape}."
        )
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating):
            raise PredictionError(
                f"a mask must hold integer class indices, got dtype {array.dtype}."
            )
        _check_finite(array, "mask")
        if np.any(array != np.round(array)):
            raise PredictionError("a mask must hold integer class indices, got fractional values.")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise PredictionError(f"mask class indices must be >= 0, got {int(array.min())}.")
    return array


def save_mask_png(mask: Any, path: str | os.PathLike) -> Path:
    """Writes class indices as a PNG: 8-bit grey for indices <= 255, 16-bit up to 65535.

    Parent folders are created; the file is written atomically (temporary file, then
    `os.replace`). Reading it back with PIL (`np.asarray(Image.open(path))`) gives the indices.

    Args:
        mask: (H, W) or (H, W, 1) non-negative integer class indices.
        path: the .png to write.

    Returns:
        The path written.
    """
    from PIL import Image

    array = _check_mask(mask)
    top = int(array.max())
    if top > 65535:
        raise PredictionError(f"mask class index {top} does not fit a 16-bit PNG (max 65535).")
    dtype = np.uint8 if top <= 255 else np.uint16
    return _write_png(Image.fromarray(np.ascontiguousarray(array.astype(dtype))), path)


def default_palette(n: int) -> np.ndarray:
    """`n` distinct RGB colours (the PASCAL VOC colour map: class 0 black, 1 dark red, ...).

    Bits of the class index are spread over the high bits of R, G and B, so all 2**24 indices
    get distinct colours.

    Args:
        n: number of classes.

    Returns:
        (n, 3) uint8 RGB colours, row i for class i.

    Example:
        >>> default_palette(3)
        array([[  0,   0,   0],
               [128,   0,   0],
               [  0, 128,   0]], dtype=uint8)
    """
    index = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    c = index.copy()
    for j in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((c >> channel) & 1) << (7 - j)
        c >>= 3
    return rgb.astype(np.uint8)


def colorize(mask: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Colours a class-index mask.

    Args:
        mask: (H, W) or (H, W, 1) class indices.
        palette: RGB colours indexed by class ([[r, g, b], ...], 0-255); default
            `default_palette`. Must have an entry for every class in the mask.

    Returns:
        (H, W, 3) uint8.

    Example:
        >>> import numpy as np
        >>> colorize(np.array([[0, 1], [2, 1]]))[0]
        array([[  0,   0,   0],
               [128,   0,   0]], dtype=uint8)
    """
    array = _check_mask(mask)
    top = int(array.max())
    if palette is None:
        colours = default_palette(top + 1)
    else:
        colours = np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) == 0:
            raise PredictionError(
                f"palette must be a list of RGB triples, got shape {colours.shape}."
            )
        if not np.issubdtype(colours.dtype, np.number) or colours.min() < 0 or colours.max() > 255:
            raise PredictionError("palette colours must be numbers in 0-255.")
        if top >= len(colours):
            raise PredictionError(
                f"the mask has class {top} but the palette has only {len(colours)} colours."
            )
        colours = colours.astype(np.uint8)
    return colours[array]


def _as_rgb_uint8(image: Any) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise PredictionError(
            f"an overlay image must be grey (H, W) or RGB (H, W, 3), got shape {array.shape}."
        )
    array = array[..., :3].astype(np.float32)
    _check_finite(array)
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


def overlay_image(image: Any, mask: Any, *, alpha: float = 0.5,
                  palette: Sequence[Sequence[int]] | None = None,
                  class_names: Sequence[str] | None = None) -> np.ndarray:
    """`(1 - alpha) * image + alpha * colorize(mask)` as (H, W, 3) uint8 (image in raw pixels).

    With `class_names`, a white legend panel (a colour swatch and the name of each class present
    in the mask) is appended on the right, and the picture extended downwards (white) when the
    legend is taller than the image.

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) raw pixels.
        mask: (H, W) class indices of the same height and width.
        alpha: weight of the mask colours, in [0, 1].
        palette: RGB colours per class (default `default_palette`).
        class_names: one name per class (index i names class i): add a legend.

    Returns:
        (H, W, 3) uint8 blended image ((H', W + legend width, 3) with a legend).

    Example:
        >>> import numpy as np
        >>> overlay_image(np.full((1, 2, 3), 200, "uint8"), np.array([[0, 1]]))[0, :, 0]
        array([100, 164], dtype=uint8)
    """
    alpha = check_number(alpha, "alpha", low=0, high=1, error=PredictionError)
    rgb = _as_rgb_uint8(image)
    colours = colorize(mask, palette)
    if rgb.shape[:2] != colours.shape[:2]:
        raise PredictionError(
            f"image {rgb.shape[:2]} and mask {colours.shape[:2]} differ in height/width."
        )
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if class_names is None:
        return blended
    return _with_legend(blended, _check_mask(mask), palette, class_names)


_LEGEND_ROW = 16
"""Pixels per legend line (swatch and name)."""


def _with_legend(picture: np.ndarray, mask: np.ndarray,
                 palette: Sequence[Sequence[int]] | None,
                 class_names: Sequence[str]) -> np.ndarray:
    """`picture` with a legend of the classes present in `mask` appended on the right."""
    from PIL import Image, ImageDraw, ImageFont

    present = [int(c) for c in np.unique(mask)]
    if present[-1] >= len(class_names):
        raise PredictionError(f"the mask has class {present[-1]} but class_names has only "
                              f"{len(class_names)} names.")
    colours = colorize(np.asarray([present]), palette)[0]
    font = ImageFont.load_default()
    labels = [f"{c} {class_names[c]}" for c in present]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(int(np.ceil(probe.textlength(t, font=font))) for t in labels)
    height = max(picture.shape[0], _LEGEND_ROW * len(labels) + 8)
    canvas = Image.new("RGB", (picture.shape[1] + text_width + 28, height), (255, 255, 255))
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    left = picture.shape[1] + 6
    for i, (text, colour) in enumerate(zip(labels, colours)):
        top = 4 + i * _LEGEND_ROW
        draw.rectangle((left, top + 2, left + 10, top + 12), fill=tuple(int(v) for v in colour),
                       outline=(0, 0, 0))
        draw.text((left + 16, top + 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def save_overlay(image: Any, mask: Any, path: str | os.PathLike, alpha: float = 0.5,
                 palette: Sequence[Sequence[int]] | None = None,
                 class_names: Sequence[str] | None = None) -> Path:
    """Writes `overlay_image(image, mask)` as an RGB PNG (atomically, creating parent folders).

    Every pixel is blended, background included (class 0 is black in the default palette).

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) raw pixels.
        mask: (H, W) class indices.
        path: destination `.png` file.
        alpha: weight of the mask colours, in [0, 1].
        palette: RGB colours per class (default `default_palette`).
        class_names: one name per class: append a legend (see `overlay_image`).

    Returns:
        The path written.
    """
    from PIL import Image

    blended = overlay_image(image, mask, alpha=alpha, palette=palette, class_names=class_names)
    return _write_png(Image.fromarray(blended), path)


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file: one class per line, `index name` or just `name`.

    Blank lines and `#` comments are skipped. With indices (as in a dataset's `classes.txt`,
    e.g. `0 null`), they must be 0, 1, ... in order; names may contain spaces.

    Args:
        path: the text file.

    Returns:
        The names, index i naming class i.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read class names from '{path}': {error}") from error
    names: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        first, _, rest = text.partition(" ")
        if first.isdigit() and rest.strip():
            if int(first) != len(names):
                raise DataError(f"'{path}' line {number}: expected class index {len(names)}, "
                                f"got {first}.")
            text = rest.strip()
        names.append(text)
    if not names:
        raise DataError(f"'{path}' holds no class names.")
    return names
