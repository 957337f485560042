"""Volume patches: standardisation, padding, the lab's patch sampler and one-hot labels.

Arrays are in vggunet's volume layout: image (H, W, D, C), label (H, W, D); D is the axial
(z) axis. NumPy only.

* :func:`standardize_volume`: ``"lab"`` (the 3D U-Net lab's: per channel and z-slice, minus the
  mean, divided by the std; a constant slice is only centred), ``"zscore"`` (per channel over the
  whole volume) or ``"none"``.
* :func:`sample_patch`: the lab's ``get_sub_volume``: random corners until the patch's background
  fraction is below a threshold; a summed-volume table makes each try O(1), so the lab's 1000
  tries cost one cumulative sum instead of 1000 patch copies.
* :func:`one_hot_volume`: class channels with or without background, channels first or last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vggunet import choices
from vggunet.checks import check_choice, check_int, check_number
from vggunet.errors import ArgumentError

__all__ = [
    "STANDARDIZE_METHODS",
    "VOLUME_DATA_FORMATS",
    "VOLUME_LABEL_MODES",
    "check_patch",
    "one_hot_volume",
    "pad_to_shape",
    "sample_patch",
    "standardize_volume",
]

# The option lists live in vggunet.choices (shared with the CLI); these names stay importable.
STANDARDIZE_METHODS = choices.STANDARDIZE_METHODS
VOLUME_LABEL_MODES = choices.LABEL_MODES
VOLUME_DATA_FORMATS = choices.DATA_FORMATS


def standardize_volume(image: np.ndarray, method: str = "lab") -> np.ndarray:
    """Standardises an (H, W, D, C) volume or patch.

    Args:
        image: the volume, channels last.
        method: ``"lab"`` per channel and z-slice, ``"zscore"`` per channel over the volume,
            ``"none"`` (float32 copy). A constant slice or channel (std 0) is only centred.

    Returns:
        float32 array of the same shape.

    Example:
        >>> x = np.stack([np.full((2, 2), 5.0), np.array([[0.0, 2.0], [0.0, 2.0]])], axis=2)
        >>> standardize_volume(x[..., None])[..., 0].transpose(2, 0, 1).tolist()
        [[[0.0, 0.0], [0.0, 0.0]], [[-1.0, 1.0], [-1.0, 1.0]]]
    """
    check_choice(method, STANDARDIZE_METHODS, "standardize")
    if image.ndim != 4:
        raise ArgumentError(f"standardize_volume needs an (H, W, D, C) array, got shape "
                            f"{image.shape}")
    if method == "none":
        return np.array(image, np.float32)
    values = np.asarray(image, np.float64)
    axes = (0, 1) if method == "lab" else (0, 1, 2)
    centred = values - values.mean(axis=axes, keepdims=True)
    std = centred.std(axis=axes, keepdims=True)
    return (centred / np.where(std == 0, 1.0, std)).astype(np.float32)


def check_patch(patch: Sequence[int], argument: str = "patch") -> tuple[int, int, int]:
    """Checks a patch size: three positive integers (H, W, D).

    Args:
        patch: the size.
        argument: the argument's name, for messages.

    Returns:
        The size as a tuple of ints.
    """
    if isinstance(patch, (str, bytes)) or not hasattr(patch, "__len__") or len(patch) != 3:
        raise ArgumentError(f"{argument} must be three positive integers (H, W, D), got "
                            f"{patch!r}")
    return tuple(check_int(size, argument) for size in patch)


def pad_to_shape(array: np.ndarray, shape: Sequence[int],
                 ) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pads the spatial axes (the first three) with zeros up to at least `shape`, split evenly.

    Args:
        array: (H, W, D, ...) array.
        shape: the minimum (H, W, D).

    Returns:
        The padded array (`array` itself where nothing is padded) and the three slices that
        crop the padded array back to the original.

    Example:
        >>> padded, crop = pad_to_shape(np.ones((1, 4, 2)), (3, 2, 5))
        >>> padded.shape, crop, padded[crop].shape
        ((3, 4, 5), (slice(1, 2, None), slice(0, 4, None), slice(1, 3, None)), (1, 4, 2))
    """
    shape = check_patch(shape, "shape")
    widths, crop = [], []
    for size, target in zip(array.shape[:3], shape):
        extra = max(target - size, 0)
        before = extra // 2
        widths.append((before, extra - before))
        crop.append(slice(before, before + size))
    if any(sum(w) for w in widths):
        array = np.pad(array, widths + [(0, 0)] * (array.ndim - 3))
    return array, tuple(crop)


def _foreground_table(label: np.ndarray) -> np.ndarray:
    """Summed-volume table of foreground voxels, zero-padded in front on each axis."""
    table = np.zeros(tuple(s + 1 for s in label.shape), np.int64)
    table[1:, 1:, 1:] = (label != 0).cumsum(0).cumsum(1).cumsum(2)
    return table


def _box_sum(table: np.ndarray, corner: np.ndarray, patch: tuple[int, int, int]) -> int:
    (x0, y0, z0), (x1, y1, z1) = corner, corner + patch
    return int(table[x1, y1, z1] - table[x0, y1, z1] - table[x1, y0, z1] - table[x1, y1, z0]
               + table[x0, y0, z1] + table[x0, y1, z0] + table[x1, y0, z0] - table[x0, y0, z0])


def sample_patch(image: np.ndarray, label: np.ndarray | None, patch: Sequence[int],
                 rng: np.random.Generator, *, background_fraction: float = 0.95,
                 max_tries: int = 1000) -> tuple[np.ndarray, np.ndarray | None]:
    """One random patch by the lab's ``get_sub_volume`` rule.

    A random corner is drawn until the label patch's background fraction is below
    `background_fraction`; after `max_tries` the patch with the least background seen is
    returned. Volumes smaller than the patch are zero-padded first (image and label).

    Args:
        image: (H, W, D, C) volume.
        label: (H, W, D) class indices (None: the first corner is taken).
        patch: the patch size (h, w, d).
        rng: the random generator (corners are drawn from it, three integers per try).
        background_fraction: accept a patch whose fraction of class-0 voxels is below this.
        max_tries: corners to try before giving up.

    Returns:
        (image patch (h, w, d, C), label patch (h, w, d) or None), copies.

    Example:
        >>> label = np.zeros((8, 8, 4), np.int32); label[6:, 6:, :] = 1
        >>> _, y = sample_patch(np.zeros((8, 8, 4, 1)), label, (2, 2, 4),
        ...                     np.random.default_rng(0), background_fraction=0.5)
        >>> float((y == 0).mean()) < 0.5
        True
    """
    patch = check_patch(patch)
    background_fraction = check_number(background_fraction, "background_fraction", low=0,
                                       high=1, low_open=True)
    max_tries = check_int(max_tries, "max_tries")
    image, _ = pad_to_shape(image, patch)
    if label is not None:
        label, _ = pad_to_shape(label, patch)
    highs = np.array(image.shape[:3]) - patch + 1
    size = float(np.prod(patch))
    table = None if label is None or (highs == 1).all() else _foreground_table(label)
    best, best_background = None, np.inf
    for _ in range(max_tries):
        corner = rng.integers(0, highs)
        if table is None:
            best = corner
            break
        background = 1.0 - _box_sum(table, corner, patch) / size
        if background < best_background:
            best, best_background = corner, background
        if background < background_fraction:
            break
    box = tuple(slice(int(c), int(c) + p) for c, p in zip(best, patch))
    return image[box].copy(), None if label is None else label[box].copy()


def one_hot_volume(label: np.ndarray, num_classes: int, *, include_background: bool = False,
                   data_format: str = "channels_last") -> np.ndarray:
    """Class indices as float32 one-hot channels, with or without the background channel.

    Args:
        label: (H, W, D) or a batch (B, H, W, D) of class indices in [0, num_classes).
        num_classes: K, background included.
        include_background: channels 0..K-1 (True) or 1..K-1 (the lab's sigmoid outputs).
        data_format: channels last, or first (after the batch axis of a batch).

    Returns:
        float32 (..., H, W, D, K') or (K', H, W, D) / (B, K', H, W, D).

    Example:
        >>> one_hot_volume(np.array([[[0, 2]]]), 3, data_format="channels_first")[:, 0, 0]
        array([[0., 0.],
               [0., 1.]], dtype=float32)
    """
    check_choice(data_format, VOLUME_DATA_FORMATS, "data_format")
    num_classes = check_int(num_classes, "num_classes")
    classes = np.arange(0 if include_background else 1, num_classes)
    encoded = (label[..., None] == classes).astype(np.float32)
    if data_format == "channels_first":
        encoded = np.moveaxis(encoded, -1, label.ndim - 3)
    return encoded
