"""Figures: image/mask/prediction panels and training curves (matplotlib).

Figures that are written to files are built with matplotlib's object-oriented API (a `Figure`
with its own Agg canvas), never through pyplot: writing a plot does not choose, change or
depend on the user's matplotlib backend (a notebook keeps its inline backend), and no figure is
left open in pyplot's registry, so long runs do not leak memory. Only `display()` without a
`path` makes a pyplot figure, when it is called, so that a notebook shows it. PNGs are written
atomically through `vggunet.fileio`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from vggunet.errors import ArgumentError
from vggunet.fileio import atomic_write
from vggunet.inference.labels import scores_to_labels

__all__ = ["display", "plot_predictions", "plot_history", "mask_colormap"]

DEFAULT_TITLES = ("Input Image", "True Mask", "Predicted Mask")
_PALETTE = (
    (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.89, 0.10, 0.11), (0.22, 0.49, 0.72),
    (0.30, 0.69, 0.29), (0.60, 0.31, 0.64), (1.00, 0.50, 0.00), (1.00, 1.00, 0.20),
    (0.65, 0.34, 0.16), (0.97, 0.51, 0.75),
)


def mask_colormap(num_classes: int) -> ListedColormap:
    """A fixed categorical colormap: class 0 black, 1 white, then distinct colours.

    Args:
        num_classes: number of classes (at least 2 colours are made).

    Returns:
        A matplotlib `ListedColormap`.
    """
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(max(2, int(num_classes)))]
    return ListedColormap(colors, name=f"vggunet_{len(colors)}")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _image_for_display(image: Any) -> tuple[np.ndarray, str | None]:
    """(H, W) grey or (H, W, 3) RGB in [0, 1] from a raw [0, 255] (or [0, 1]) image.

    Other channel counts show as overlays do: 2 channels their first (grey), more than 3 their
    first three.
    """
    array = _to_numpy(image).astype(np.float32)
    if array.ndim == 3 and array.shape[-1] in (1, 2):
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] > 3:
        array = array[..., :3]
    if array.ndim == 3 and array.shape[-1] == 3 and np.allclose(array[..., 0], array[..., 1]) \
            and np.allclose(array[..., 0], array[..., 2]):
        array = array[..., 0]
    finite = array[np.isfinite(array)]
    top = float(finite.max()) if finite.size else 1.0
    scale = 255.0 if top > 1.0 else 1.0
    array = np.clip(np.nan_to_num(array) / scale, 0.0, 1.0)
    return array, ("gray" if array.ndim == 2 else None)


def _mask_for_display(mask: Any) -> np.ndarray:
    """Class labels (H, W) from labels, (H, W, 1) labels or (H, W, K) probabilities."""
    array = _to_numpy(mask)
    if array.ndim == 3:
        channel = array[..., 0]
        # One channel holds labels unless it looks like probabilities (floats in [0, 1] that
        # are not all whole numbers).
        is_labels = array.shape[-1] == 1 and not (
            np.issubdtype(array.dtype, np.floating) and channel.max(initial=0) <= 1.0
            and not np.all(np.mod(channel, 1) == 0))
        array = channel if is_labels else scores_to_labels(array)
    return array.astype(np.int64)


def _figure(figsize: tuple[float, float], *, pyplot: bool = False) -> Figure:
    """A new figure: on its own Agg canvas, or (`pyplot=True`) a pyplot figure to be shown."""
    if pyplot:
        import matplotlib.pyplot as plt  # only when a figure is to be shown, never at import

        return plt.figure(figsize=figsize)
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    return atomic_write(path, lambda stream: fig.savefig(stream, format="png", dpi=dpi),
                        what="figure ")


def display(
    display_list: Sequence[Any],
    titles: Sequence[str] = DEFAULT_TITLES,
    path: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    dpi: int = 100,
) -> Figure:
    """The lab's `display`: one row of panels (input image, true mask, predicted mask).

    Without `path` the figure is made with pyplot, so that a notebook shows it (in a script,
    call `matplotlib.pyplot.show()`); with `path` it is only written to the file.

    Args:
        display_list: an image followed by masks (labels, or probabilities reduced by argmax).
        titles: panel titles.
        path: save the figure there as PNG when given (it is then not shown).
        num_classes: colormap size (default: from the masks).
        dpi: resolution when saving.

    Returns:
        The Figure (it can still be saved again).
    """
    items = list(display_list)
    fig = _figure((5 * len(items), 5), pyplot=path is None)
    axes = fig.subplots(1, len(items), squeeze=False)
    masks = [_mask_for_display(m) for m in items[1:]]
    k = num_classes or max([int(m.max(initial=0)) + 1 for m in masks] + [2])
    cmap = mask_colormap(k)
    for i, (ax, item) in enumerate(zip(axes[0], items)):
        if i == 0:
            image, image_cmap = _image_for_display(item)
            ax.imshow(image, cmap=image_cmap, vmin=0.0, vmax=1.0)
        else:
            ax.imshow(masks[i - 1], cmap=cmap, vmin=0, vmax=k - 1, interpolation="nearest")
        ax.set_title(titles[i] if i < len(titles) else f"Panel {i + 1}")
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        _save(fig, path, dpi)
    return fig


def plot_predictions(
    images: Any,
    true_masks: Any,
    pred_masks: Any,
    path: str | os.PathLike,
    max_samples: int = 4,
    titles: Sequence[str] = DEFAULT_TITLES,
    *,
    num_classes: int | None = None,
    dpi: int = 100,
    panel_size: float = 3.0,
) -> Path:
    """A grid with one row per sample: image, true mask, predicted mask.

    Args:
        images: `(N, H, W, C)` raw images in [0, 255] (grey or RGB).
        true_masks: `(N, H, W)` labels.
        pred_masks: `(N, H, W)` labels or `(N, H, W, K)` model outputs (argmax / 0.5 threshold).
        path: PNG destination.
        max_samples: at most this many rows.
        titles: column titles.
        num_classes: colormap size (default: from the masks); truth and prediction share the
            same colormap and vmin/vmax.
        dpi: resolution.
        panel_size: inches per panel (the PNG is `3*panel_size*dpi` pixels wide).

    Returns:
        The path written.
    """
    images = _to_numpy(images)
    true_masks = _to_numpy(true_masks)
    pred_masks = _to_numpy(pred_masks)
    n = min(len(images), len(true_masks), len(pred_masks), int(max_samples))
    if n < 1:
        raise ArgumentError("plot_predictions needs at least one sample.")
    truths = [_mask_for_display(true_masks[i]) for i in range(n)]
    preds = [_mask_for_display(pred_masks[i]) for i in range(n)]
    k = num_classes or max([int(m.max(initial=0)) + 1 for m in truths + preds] + [2])
    if pred_masks.ndim == 4 and pred_masks.shape[-1] > 1:
        k = max(k, pred_masks.shape[-1])
    cmap = mask_colormap(k)
    fig = _figure((3 * panel_size, n * panel_size))
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        image, image_cmap = _image_for_display(images[row])
        axes[row, 0].imshow(image, cmap=image_cmap, vmin=0.0, vmax=1.0)
        axes[row, 1].imshow(truths[row], cmap=cmap, vmin=0, vmax=k - 1, interpolation="nearest")
        axes[row, 2].imshow(preds[row], cmap=cmap, vmin=0, vmax=k - 1, interpolation="nearest")
        for col in range(3):
            axes[row, col].axis("off")
            if row == 0:
                axes[row, col].set_title(titles[col] if col < len(titles) else "")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_history(
    history: Mapping[str, Sequence[float]] | Any,
    path: str | os.PathLike,
    phase_boundaries: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    dpi: int = 100,
) -> Path:
    """Training curves: loss and each metric per epoch, train and validation.

    Args:
        history: `{name: [value per epoch]}` (e.g. `TrainResult.history`) or a Keras `History`.
        path: PNG destination.
        phase_boundaries: epoch indices where phases start (e.g. `[0, 5]`); every boundary
            after the first is drawn as a labelled vertical dashed line.
        metrics: names to plot besides the loss (default: every non-`val_` key).
        dpi: resolution.

    Returns:
        The path written.
    """
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        history = history.history
    history = {k: list(v) for k, v in dict(history).items()}
    if metrics is None:
        names = [k for k in history if not k.startswith("val_") and k not in ("epoch", "phase")]
        names = (["loss"] if "loss" in names else []) + [k for k in names if k != "loss"]
    else:
        names = (["loss"] if "loss" in history and "loss" not in metrics else []) + list(metrics)
    names = [n for n in names if n in history or f"val_{n}" in history]
    if not names:
        raise ArgumentError(f"history has nothing to plot (keys: {sorted(history)}).")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = _figure((5 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    boundaries = [b for b in (phase_boundaries or []) if b > 0]
    for ax, name in zip(axes.flat, names):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                values = history[key]
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", markersize=3,
                        label="val" if key.startswith("val_") else "train")
        for i, b in enumerate(boundaries, start=2):
            # Boundary b = first epoch index of the new phase: between epochs b and b+1 (1-based).
            ax.axvline(b + 0.5, color="grey", linestyle="--", linewidth=1.0,
                       label=f"phase {i} starts")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path, dpi)
