"""Slice views of volumes: an MRI channel with the true and predicted labels as colour overlays.

Built like :mod:`vggunet.plots` (object-oriented matplotlib on its own Agg canvas, PNGs written
atomically). Rows are views, columns the MRI channel, the true labels over it and the predicted
labels over it; class colours are `mask_colormap`'s without its white (class 1 there), which
would not show on bright MRI. Volumes are ``(H, W, D[, C])`` with D the axial (z) axis: the
axial view shows ``image[:, :, z]``, the coronal ``image[:, y, :]`` and the sagittal
``image[x, :, :]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from vggunet.checks import check_choice, check_int
from vggunet.errors import ArgumentError
from vggunet.inference.volume import volume_labels
from vggunet.plots import _figure, _save, mask_colormap

__all__ = ["VOLUME_VIEWS", "plot_volume_slices"]

VOLUME_VIEWS = ("axial", "coronal", "sagittal")
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
_AXIS_NAMES = ("x", "y", "z")
_OVERLAY_ALPHA = 0.5


def _labels(volume: Any, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    """(H, W, D) int labels from labels or (H, W, D, K) probabilities, checked against `shape`."""
    if volume is None:
        return None
    array = np.asarray(volume)
    if array.ndim == 4:
        array = volume_labels(array)
    if array.shape != shape:
        raise ArgumentError(f"{what} shape {array.shape} does not match the image's {shape}.")
    return array.astype(np.int64)


def _default_index(axis: int, label: np.ndarray | None, prediction: np.ndarray | None,
                   size: int) -> int:
    """The slice with the most foreground in `label`, else in `prediction`, else the centre."""
    for volume in (label, prediction):
        if volume is not None and np.any(volume > 0):
            others = tuple(a for a in range(3) if a != axis)
            return int(np.argmax(np.sum(volume > 0, axis=others)))
    return size // 2


def _slice_index(view: str, index: Any, shape: tuple[int, ...], label: Any,
                 prediction: Any) -> int:
    axis = _VIEW_AXIS[view]
    wanted = index.get(view) if isinstance(index, Mapping) else index
    if wanted is None:
        return _default_index(axis, label, prediction, shape[axis])
    wanted = check_int(wanted, f"index ({view})", minimum=None)
    if not 0 <= wanted < shape[axis]:
        raise ArgumentError(f"index {wanted} is out of range for the {view} view: axis {axis} "
                            f"has {shape[axis]} slices (0..{shape[axis] - 1}).")
    return wanted


def _overlay_colormap(n_classes: int) -> ListedColormap:
    """`mask_colormap`'s colours without its white (class 1 there), invisible on bright MRI."""
    colors = mask_colormap(n_classes + 1).colors
    return ListedColormap([colors[0], *colors[2:]], name=f"vggunet_overlay_{n_classes}")


def _grey(channel: np.ndarray) -> tuple[float, float]:
    """Display range of an MRI channel: its 1st-99th percentile (intensities have no scale)."""
    low, high = (float(v) for v in np.percentile(channel, (1, 99)))
    return low, (high if high > low else low + 1.0)


def plot_volume_slices(
    image: Any,
    label: Any = None,
    prediction: Any = None,
    path: str | os.PathLike | None = None,
    *,
    views: Sequence[str] = VOLUME_VIEWS,
    index: int | Mapping[str, int] | None = None,
    channel: int = 0,
    class_names: Sequence[str] | None = None,
    dpi: int = 100,
) -> Figure | Path:
    """Slices of a volume: the MRI channel, the true and the predicted labels over it.

    Args:
        image: ``(H, W, D, C)`` or ``(H, W, D)`` intensities.
        label: ``(H, W, D)`` true class labels (0 = background), or None.
        prediction: ``(H, W, D)`` predicted labels, or ``(H, W, D, K)`` probabilities (turned
            into labels by ``volume_labels``), or None.
        path: write a PNG there (atomically) and return its path; None returns the figure.
        views: rows, from ``VOLUME_VIEWS``.
        index: the slice of every view, or ``{view: slice}``; a view without one (or None)
            shows the slice with the most foreground in ``label``, else in ``prediction``,
            else the centre slice.
        channel: the MRI channel shown.
        class_names: names of classes 0..N-1 for the legend (default their numbers).
        dpi: resolution of the PNG.

    Returns:
        The path written, or the matplotlib ``Figure``.

    Raises:
        ArgumentError: On an unknown view, a slice index or channel out of range, or label
            shapes that do not match the image.
    """
    volume = np.asarray(image, dtype=np.float32)
    volume = volume[..., None] if volume.ndim == 3 else volume
    if volume.ndim != 4:
        raise ArgumentError(f"image must be (H, W, D) or (H, W, D, C), got {volume.shape}.")
    channel = check_int(channel, "channel", minimum=0)
    if channel >= volume.shape[-1]:
        raise ArgumentError(f"channel {channel} is out of range for an image with "
                            f"{volume.shape[-1]} channel(s).")
    shape = volume.shape[:3]
    true, pred = _labels(label, shape, "label"), _labels(prediction, shape, "prediction")
    views = [check_choice(v, VOLUME_VIEWS, "views") for v in views]
    if not views:
        raise ArgumentError(f"views is empty: give at least one of {VOLUME_VIEWS}.")
    indices = [_slice_index(v, index, shape, true, pred) for v in views]
    present = [v for v in (true, pred) if v is not None]
    n_classes = len(class_names) if class_names is not None else \
        max([2] + [int(v.max()) + 1 for v in present])
    names = list(class_names) if class_names is not None else [str(k) for k in range(n_classes)]
    columns = [("MRI channel", None)] + [(t, v) for t, v in (("true", true), ("predicted", pred))
                                         if v is not None]
    fig = _figure((3.2 * len(columns), 3.2 * len(views) + 0.6))
    cmap, (low, high) = _overlay_colormap(n_classes), _grey(volume[..., channel])
    for row, (view, i) in enumerate(zip(views, indices)):
        axis = _VIEW_AXIS[view]
        mri = np.take(volume[..., channel], i, axis=axis)
        for col, (title, labels) in enumerate(columns):
            ax = fig.add_subplot(len(views), len(columns), row * len(columns) + col + 1)
            # Transposed, origin low: the first array axis runs left to right. Square panels
            # (aspect auto): a 160x160x16 patch's side views would be thin strips.
            ax.imshow(mri.T, cmap="gray", vmin=low, vmax=high, origin="lower", aspect="auto")
            if labels is not None:
                overlay = np.take(labels, i, axis=axis).T
                ax.imshow(np.ma.masked_equal(overlay, 0), cmap=cmap, vmin=0,
                          vmax=n_classes - 1, alpha=_OVERLAY_ALPHA, origin="lower",
                          interpolation="nearest", aspect="auto")
            ax.set_title(f"{view} {_AXIS_NAMES[axis]} = {i}: "
                         f"{title}{f' {channel}' if labels is None else ''}", fontsize=9)
            ax.axis("off")
    if present:
        handles = [Patch(color=cmap(k), label=names[k]) for k in range(1, n_classes)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 if present else 0, 1, 1))
    return fig if path is None else _save(fig, path, dpi)
