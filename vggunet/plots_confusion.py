"""The confusion-matrix figure of `evaluate`: rows (truth) normalised, class names on the axes.

Drawn on its own Agg canvas and written atomically, as every figure of `vggunet.plots`. The
figure grows with the number of classes and the labels shrink, so that 59 classes stay
readable; per-cell percentages are printed only up to `MAX_ANNOTATED` classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vggunet.checks import check_int
from vggunet.errors import ArgumentError
from vggunet.plots import _figure, _save

__all__ = ["MAX_ANNOTATED", "confusion_figure_size", "normalize_rows", "plot_confusion_matrix"]

MAX_ANNOTATED = 20
"""Up to this many classes each cell shows its percentage; beyond, only the colours."""


def normalize_rows(cm: Any) -> np.ndarray:
    """Each row of a confusion matrix divided by its sum (rows without pixels stay 0).

    Args:
        cm: (K, K) counts, rows truth, columns prediction.

    Returns:
        (K, K) float64: row i is the distribution of predictions for true class i.

    Example:
        >>> normalize_rows([[3, 1], [0, 0]])
        array([[0.75, 0.25],
               [0.  , 0.  ]])
    """
    array = np.asarray(cm, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ArgumentError(f"a confusion matrix must be (K, K), got shape {array.shape}.")
    if not np.all(np.isfinite(array)) or array.min() < 0:
        raise ArgumentError("a confusion matrix must hold finite non-negative counts.")
    totals = array.sum(axis=1, keepdims=True)
    return np.divide(array, totals, out=np.zeros_like(array), where=totals > 0)


def confusion_figure_size(num_classes: int) -> float:
    """The side of the square figure in inches: 5 for a few classes, ~0.2 inch per class beyond.

    Args:
        num_classes: K.

    Returns:
        Inches (the PNG is `size * dpi` pixels square).

    Example:
        >>> confusion_figure_size(2), confusion_figure_size(59)
        (5.0, 14.8)
    """
    return float(max(5.0, round(3.0 + 0.2 * int(num_classes), 1)))


def plot_confusion_matrix(cm: Any, path: str | os.PathLike,
                          class_names: Sequence[str] | None = None, *, dpi: int = 100,
                          title: str = "confusion matrix (rows: truth, normalised)") -> Path:
    """Writes the row-normalised confusion matrix as a PNG heat map.

    Args:
        cm: (K, K) counts, rows truth, columns prediction (`evaluate(...)["confusion_matrix"]`).
        path: PNG destination (written atomically).
        class_names: one name per class (default `0`, `1`, ...).
        dpi: resolution; the PNG is `confusion_figure_size(K) * dpi` pixels square.
        title: the figure's title.

    Returns:
        The path written.
    """
    fractions = normalize_rows(cm)
    k = fractions.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ArgumentError(f"class_names has {len(names)} names for a {k}×{k} confusion matrix.")
    dpi = check_int(dpi, "dpi")
    side = confusion_figure_size(k)
    fig = _figure((side, side))
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fontsize = 9 if k <= MAX_ANNOTATED else 6
    ticks = np.arange(k)
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= MAX_ANNOTATED:
        for (row, col), value in np.ndenumerate(fractions):
            if value >= 0.005:  # empty cells stay blank so the pattern shows
                ax.text(col, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    return _save(fig, path, dpi)
