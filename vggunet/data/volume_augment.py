"""Volume augmentation: random flips of each spatial axis and 90° turns in the axial plane.

Image (H, W, D, C) and label (H, W, D) get the same transform. The random numbers are drawn in a
fixed order (three flip draws, then one rotation draw) whatever is switched off, so a seed gives
the same transform of the enabled parts for any setting. NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vggunet.checks import check_bool
from vggunet.errors import ArgumentError

__all__ = ["augment_volume"]


def augment_volume(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, *,
                   flips: Sequence[bool] = (True, True, True), rot90: bool = True,
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Flips each enabled spatial axis with probability 1/2, then turns k·90° in the (H, W) plane.

    k is uniform in 0..3 when H == W, in {0, 2} otherwise (so the shape never changes).

    Args:
        image: (H, W, D, C) volume or patch.
        label: (H, W, D) labels, or None.
        rng: the random generator.
        flips: whether to flip axis H, W, D.
        rot90: whether to turn in the axial plane.

    Returns:
        (image, label), contiguous arrays of the input shapes.

    Example:
        >>> x = np.arange(8.0).reshape(2, 2, 2, 1)
        >>> a, b = augment_volume(x, x[..., 0].astype(int), np.random.default_rng(3))
        >>> bool((a[..., 0] == b).all())
        True
    """
    if len(flips) != 3:
        raise ArgumentError(f"flips must be three booleans (H, W, D), got {flips!r}")
    flips = [check_bool(flip, "flips") for flip in flips]
    rot90 = check_bool(rot90, "rot90")
    draws = rng.random(3) < 0.5
    turn = int(rng.integers(0, 4))
    axes = tuple(axis for axis in range(3) if flips[axis] and draws[axis])
    k = (turn if image.shape[0] == image.shape[1] else 2 * (turn % 2)) if rot90 else 0
    arrays = [image] if label is None else [image, label]
    out = []
    for array in arrays:
        if axes:
            array = np.flip(array, axes)
        if k:
            array = np.rot90(array, k, axes=(0, 1))
        out.append(np.ascontiguousarray(array))
    return out[0], None if label is None else out[1]
