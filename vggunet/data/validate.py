"""Checking a data set before training, and the statistics gathered on the way.

:func:`validate_pairs` decodes every pair once, in Python, one file at a time: each problem (an
unreadable file, a size mismatch, a class value out of range) is a
:class:`~vggunet.errors.DataError` naming the file before any ``tf.data`` graph exists, and the
per-class pixel counts it gathers give :func:`class_weights` without a second pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggunet.checks import check_choice, check_int
from vggunet.data.images import check_channels, convert_channels, decode_image
from vggunet.data.masks import PaletteSpec, check_mask_values, mask_decoder
from vggunet.data.pairs import Pair
from vggunet.data.weightmaps import FREQUENCY_WEIGHTS, frequency_weights
from vggunet.errors import ArgumentError, DataError

__all__ = ["DatasetInfo", "WEIGHT_METHODS", "check_at_least_one", "check_same_size",
           "class_weights", "validate_pairs"]

WEIGHT_METHODS = FREQUENCY_WEIGHTS



@dataclass
class DatasetInfo:
    """What :func:`validate_pairs` learnt while streaming over a data set.

    Attributes:
        num_pairs: number of (image, mask) pairs.
        num_classes: number of classes.
        mask_format: the mask encoding used.
        image_sizes: (H, W) -> number of images of that size.
        size_examples: (H, W) -> one image of that size (for messages).
        image_channels: channel count of the files -> number of images (PIL files: 1 or 3,
            or with their alpha band when `channels` asked for it; ``.npy``: their own).
        class_pixel_counts: int64 (num_classes,) pixels per class.
        class_image_pixels: int64 (num_classes,) labelled pixels of the images
            in which each class occurs (the denominator of median-frequency weights).
        ignored_pixels: pixels equal to ignore_index.
    """

    num_pairs: int
    num_classes: int
    mask_format: str
    image_sizes: dict[tuple[int, int], int] = field(default_factory=dict)
    size_examples: dict[tuple[int, int], Path] = field(default_factory=dict)
    image_channels: dict[int, int] = field(default_factory=dict)
    class_pixel_counts: np.ndarray = None
    class_image_pixels: np.ndarray = None
    ignored_pixels: int = 0

    @property
    def labelled_pixels(self) -> int:
        """Pixels carrying a class (ignored pixels excluded)."""
        return int(self.class_pixel_counts.sum())

    @property
    def class_frequencies(self) -> np.ndarray:
        """Fraction of labelled pixels in each class."""
        return self.class_pixel_counts / max(self.labelled_pixels, 1)


def _accumulate(counts: np.ndarray, image_pixels: np.ndarray, mask: np.ndarray,
                num_classes: int, ignore_index: int | None) -> int:
    """Adds one mask's class pixels to the totals; returns its ignored pixel count."""
    valid = (mask >= 0) & (mask < num_classes)
    ignored = 0
    if ignore_index is not None:
        # An ignore_index inside the class range (e.g. 0 for "unlabelled") is not a class.
        is_ignored = mask == ignore_index
        valid &= ~is_ignored
        ignored = int(is_ignored.sum())
    c = np.bincount(mask[valid].ravel(), minlength=num_classes)[:num_classes]
    counts += c
    image_pixels[c > 0] += int(valid.sum())
    return ignored


def check_at_least_one(value: int, argument: str) -> int:
    """Checks a count that must be an integer >= 1 (`num_classes`, `batch_size`).

    Args:
        value: the value to check.
        argument: its name, for the message.

    Returns:
        The value as a Python int.

    Raises:
        ArgumentError: not an integer, or below 1.

    Example:
        >>> check_at_least_one(0, "batch_size")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: batch_size must be >= 1, got 0.
    """
    # The data API has always said "must be >= 1" (and its users match that wording), so
    # check_int checks the type only and the range is checked here.
    number = check_int(value, argument, minimum=None)
    if number < 1:
        raise ArgumentError(f"{argument} must be >= 1, got {number}.")
    return number


def check_same_size(image: np.ndarray, image_path: str | os.PathLike, mask: np.ndarray,
                    mask_path: str | os.PathLike) -> None:
    """Checks that an image and its mask have the same height and width.

    Args:
        image: (H, W, C) pixels.
        image_path: its file, for the message.
        mask: (H, W) class indices.
        mask_path: its file, for the message.

    Raises:
        DataError: the sizes differ; both files and sizes are named.
    """
    if image.shape[:2] == mask.shape:
        return
    hint = ""
    if image.shape[:2] == mask.shape[::-1]:
        hint = ("; the sizes are swapped: vggunet applies an image's EXIF orientation (as "
                "viewers and annotation tools do), so save the image upright or its mask "
                "in the same orientation")
    raise DataError(f"size mismatch: image {image_path} is {image.shape[0]}x{image.shape[1]} "
                    f"(HxW) but its mask {mask_path} is {mask.shape[0]}x{mask.shape[1]}{hint}")


def _new_info(num_pairs: int, num_classes: int, mask_format: str) -> DatasetInfo:
    return DatasetInfo(num_pairs, num_classes, mask_format,
                       class_pixel_counts=np.zeros(num_classes, np.int64),
                       class_image_pixels=np.zeros(num_classes, np.int64))


def _add(info: DatasetInfo, image_path: Path, image: np.ndarray, mask: np.ndarray,
         ignore_index: int | None) -> None:
    size = (int(image.shape[0]), int(image.shape[1]))
    info.image_sizes[size] = info.image_sizes.get(size, 0) + 1
    info.size_examples.setdefault(size, image_path)
    info.image_channels[image.shape[2]] = info.image_channels.get(image.shape[2], 0) + 1
    info.ignored_pixels += _accumulate(info.class_pixel_counts, info.class_image_pixels,
                                       mask, info.num_classes, ignore_index)


def validate_pairs(pairs: Sequence[Pair], num_classes: int, mask_format: str = "index",
                   palette: PaletteSpec | None = None, mask_channel: int = 0,
                   ignore_index: int | None = None, *,
                   channels: int | None = None) -> DatasetInfo:
    """Check every pair up front, one file at a time, and gather statistics.

    Each image and mask is fully decoded (truncation is caught), sizes are
    compared and mask values checked against ``num_classes``.

    Args:
        pairs: (image_path, mask_path) pairs.
        num_classes: number of classes.
        mask_format, palette, mask_channel, ignore_index: as in :func:`load_mask`.
        channels: when given, each image must give this many channels (as in
            :func:`load_image`: grey and RGB convert into each other, other counts must match).

    Returns:
        :class:`DatasetInfo` with counts, sizes and per-class pixel counts.

    Raises:
        DataError: the first problem found, naming the file.
        ArgumentError: a bad `num_classes`, mask encoding or `channels`.
    """
    num_classes = check_at_least_one(num_classes, "num_classes")
    if channels is not None:
        channels = check_channels(channels)
    # Files are read as stored (1 or 3 channels for PIL files, alpha kept where a count other
    # than 1 or 3 asks for it) so `image_channels` counts what the files hold.
    native = None if channels in (None, 1, 3) else channels
    read_mask = mask_decoder(mask_format, palette, mask_channel)
    if not pairs:
        raise DataError("no (image, mask) pairs to validate: the data set is empty")
    info = _new_info(len(pairs), num_classes, mask_format)
    for image_path, mask_path in pairs:
        image_path, mask_path = Path(image_path), Path(mask_path)
        image = decode_image(image_path, native)
        if channels is not None:  # an .npy array of another count than 1 or 3 fails here
            convert_channels(image[:1, :1], channels, image_path)
        mask = read_mask(mask_path)
        check_same_size(image, image_path, mask, mask_path)
        check_mask_values(mask, mask_path, num_classes, ignore_index)
        _add(info, image_path, image, mask, ignore_index)
    return info


# --------------------------------------------------------------------------- weights


def _info_from_masks(masks: Sequence[np.ndarray], num_classes: int,
                     ignore_index: int | None) -> DatasetInfo:
    info = _new_info(len(masks), num_classes, "index")
    for mask in masks:
        info.ignored_pixels += _accumulate(info.class_pixel_counts, info.class_image_pixels,
                                           np.asarray(mask), num_classes, ignore_index)
    return info


def class_weights(info_or_pairs: DatasetInfo | Sequence[Pair] | np.ndarray | Sequence[np.ndarray],
                  num_classes: int, method: str = "median_frequency",
                  ignore_index: int | None = None, *, mask_format: str = "index",
                  palette: PaletteSpec | None = None, mask_channel: int = 0,
                  max_weight: float | None = None) -> np.ndarray:
    """Per-class loss weights from class pixel frequencies (formulas: ``frequency_weights``).

    ``median_frequency`` (Eigen & Fergus 2015, SegNet): ``w_c = median(f) / f_c``
    with ``f_c`` = pixels of class c / labelled pixels of the images containing c.
    ``inverse_frequency``: ``w_c = N / (K * n_c)`` (N labelled pixels, K classes
    present, n_c pixels of c), so a balanced data set gets weight 1;
    ``inverse_sqrt_frequency``: its square root. Classes that
    never occur get weight 0 and are left out of the median.

    Args:
        info_or_pairs: a :class:`DatasetInfo`, a list of (image, mask) path pairs,
            a mask array (H, W) / (N, H, W), or a list of mask arrays.
        num_classes: number of classes.
        method: one of ``WEIGHT_METHODS``.
        ignore_index: label excluded from the counts (when arrays or pairs are given).
        mask_format, palette, mask_channel: how to read masks when pairs are given.
        max_weight: clip every weight to at most this (> 0), or None.

    Returns:
        float32 (num_classes,) weights.
    """
    method = check_choice(method, WEIGHT_METHODS, "method")
    src = info_or_pairs
    if isinstance(src, np.ndarray):
        src = _info_from_masks([src] if src.ndim == 2 else list(src), num_classes,
                               ignore_index)
    elif not isinstance(src, DatasetInfo) and src and isinstance(src[0], np.ndarray):
        src = _info_from_masks(src, num_classes, ignore_index)
    elif not isinstance(src, DatasetInfo):
        src = validate_pairs(src, num_classes, mask_format, palette, mask_channel, ignore_index)
    return frequency_weights(np.asarray(src.class_pixel_counts)[:num_classes],
                             np.asarray(src.class_image_pixels)[:num_classes], method,
                             max_weight)
