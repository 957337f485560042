"""Loss weights from masks: per-class frequency weights, and U-Net border weights.

Class weights (:func:`frequency_weights`, the formulas behind ``sample_weights=`` /
``--sample-weights``) turn per-class pixel counts into one weight per class. Border weights: pixels
in the narrow gaps between touching objects weigh more. Objects are the 4-connected components of a
mask's foreground; the distances to the nearest and second-nearest object give the separation term
of Ronneberger et al. (2015, eq. 2). scipy's ``ndimage`` does the labelling and distance transforms
when installed; exact numpy fallbacks (same results) are used without it.
"""

from __future__ import annotations

import math

import numpy as np

from vggunet.checks import check_choice, check_number

try:  # scipy is optional: exact numpy fallbacks below are used without it.
    from scipy import ndimage as _ndimage
except ImportError:  # pragma: no cover - depends on the environment
    _ndimage = None

__all__ = ["FREQUENCY_WEIGHTS", "border_weight_map", "frequency_weights"]

FREQUENCY_WEIGHTS = ("median_frequency", "inverse_frequency", "inverse_sqrt_frequency")
"""The class weightings of :func:`frequency_weights` (the non-border ``SAMPLE_WEIGHTS``)."""


def frequency_weights(counts: np.ndarray, image_pixels: np.ndarray | None,
                      method: str = "median_frequency",
                      max_weight: float | None = None) -> np.ndarray:
    """Per-class loss weights from per-class pixel counts.

    ``median_frequency`` (Eigen & Fergus 2015, SegNet): ``w_c = median(f) / f_c`` with
    ``f_c = n_c / I_c`` (``I_c``: labelled pixels of the images containing c).
    ``inverse_frequency``: ``w_c = N / (K * n_c)`` (N labelled pixels, K classes present), so a
    balanced data set gets weight 1. ``inverse_sqrt_frequency``: the square root of that,
    ``sqrt(N / (K * n_c))``: rare classes still weigh more, but a class 100 times rarer weighs
    10 times more, not 100 (over-weighted rare classes are over-predicted). Classes that never
    occur get weight 0 and are left out of the median. ``max_weight`` then clips every weight
    (any method), so no class can weigh more than that.

    Args:
        counts: (K,) pixels of each class.
        image_pixels: (K,) labelled pixels of the images containing each class (read by
            ``median_frequency`` only).
        method: one of ``FREQUENCY_WEIGHTS``.
        max_weight: upper bound of the weights (> 0), or None for no bound.

    Returns:
        float32 (K,) weights.

    Example:
        >>> w = frequency_weights([900, 100], [1000, 1000], "inverse_sqrt_frequency")
        >>> [round(x, 4) for x in w.tolist()]  # sqrt(1000 / (2 * 900)), sqrt(1000 / (2 * 100))
        [0.7454, 2.2361]
        >>> w = frequency_weights([900, 100, 0], [1000, 1000, 0], "inverse_frequency",
        ...                       max_weight=2)
        >>> [round(x, 4) for x in w.tolist()]
        [0.5556, 2.0, 0.0]
    """
    method = check_choice(method, FREQUENCY_WEIGHTS, "method")
    max_weight = check_number(max_weight, "max_weight", low=0, low_open=True, allow_none=True)
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros(counts.shape, np.float64)
    if not present.any():
        return weights.astype(np.float32)
    if method == "median_frequency":
        freq = counts[present] / np.asarray(image_pixels, np.float64)[present]
        weights[present] = np.median(freq) / freq
    else:
        weights[present] = counts.sum() / (present.sum() * counts[present])
        if method == "inverse_sqrt_frequency":
            weights = np.sqrt(weights)
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    return weights.astype(np.float32)


def _label_components(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean image: (labels 1..n, 0 = background, n)."""
    if _ndimage is not None:
        labels, n = _ndimage.label(fg)
        return labels.astype(np.int32), int(n)
    h, w = fg.shape
    padded = np.zeros((h, w + 1), np.int8)
    padded[:, 1:] = fg
    starts = np.diff(padded, axis=1) == 1  # True where a horizontal run begins
    # Row-major cumulative count of run starts = run id of every foreground pixel.
    run_id = np.cumsum(starts.ravel()).reshape(h, w)
    n_runs = int(run_id[-1, -1]) if h and w else 0
    if n_runs == 0:
        return np.zeros((h, w), np.int32), 0
    both = fg[:-1] & fg[1:]
    edges = np.unique(np.stack([run_id[:-1][both], run_id[1:][both]], 1), axis=0)
    parent = list(range(n_runs + 1))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n_runs + 1)])
    _, comp = np.unique(roots[1:], return_inverse=True)
    lut = np.concatenate([[0], comp.ravel() + 1]).astype(np.int32)
    labels = np.where(fg, lut[run_id], 0).astype(np.int32)
    return labels, int(comp.max() + 1)


def _distance_to(target: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from every pixel to the nearest True pixel of ``target``."""
    if _ndimage is not None:
        return _ndimage.distance_transform_edt(~target)
    h, w = target.shape
    big = 1e9
    rows = np.arange(h, dtype=np.float64)[:, None]
    # Pass 1: distance along each column to the nearest target pixel above/below.
    above = np.maximum.accumulate(np.where(target, rows, -big), axis=0)
    below = np.minimum.accumulate(np.where(target, rows, big)[::-1], axis=0)[::-1]
    g2 = np.minimum(rows - above, below - rows) ** 2
    # Pass 2: exact min over columns, brute force in row chunks (O(H W^2)), which
    # is cheap for the object windows border_weight_map uses.
    cols = np.arange(w, dtype=np.float64)
    dx2 = (cols[:, None] - cols[None, :]) ** 2
    out = np.empty((h, w), np.float64)
    step = max(1, (4 << 20) // max(w * w, 1))
    for r in range(0, h, step):
        out[r:r + step] = (g2[r:r + step, None, :] + dx2[None]).min(axis=2)
    return np.sqrt(out)


def border_weight_map(mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                      class_weights: np.ndarray | None = None,
                      ignore_index: int | None = None) -> np.ndarray:
    """U-Net separation weights (Ronneberger et al. 2015, eq. 2).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` where d1, d2
    are the distances to the nearest and second-nearest object; objects are the
    4-connected components of the foreground (class != 0). The separation term
    is added on background pixels only: inside an object d1 = 0, and the paper's
    weight maps emphasise the gaps between touching objects, not their interiors.
    Objects farther than ``4.3 sigma`` are skipped, where the term is below
    ``1e-4 * w0``.

    Args:
        mask: int (H, W) class indices; 0 is background.
        w0: weight of the separation term.
        sigma: its width in pixels.
        class_weights: optional (num_classes,) weights for ``w_c``; default 1.
        ignore_index: pixels with this value get weight 0.

    Returns:
        float32 (H, W) weights.
    """
    mask = np.asarray(mask)
    valid = np.ones(mask.shape, bool) if ignore_index is None else mask != ignore_index
    if class_weights is None:
        wc = np.ones(mask.shape, np.float64)
    else:
        cw = np.asarray(class_weights, np.float64)
        wc = cw[np.clip(np.where(valid, mask, 0), 0, len(cw) - 1)]
    fg = valid & (mask > 0)
    labels, n = _label_components(fg)
    weights = wc
    if n >= 2 and w0 and sigma > 0:
        reach = int(math.ceil(sigma * math.sqrt(2.0 * math.log(1e4))))
        d1, d2 = _two_nearest(labels, n, reach)
        with np.errstate(invalid="ignore", over="ignore"):
            sep = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma ** 2))
        sep = np.where(np.isfinite(d2) & valid & (mask == 0), sep, 0.0)
        weights = wc + sep
    return np.where(valid, weights, 0.0).astype(np.float32)


def _two_nearest(labels: np.ndarray, n: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest of objects 1..n (inf beyond `reach`)."""
    h, w = labels.shape
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    # Bounding boxes of the objects: each one's distances are computed in its box + reach only.
    y0 = np.full(n, h)
    y1 = np.full(n, -1)
    x0 = np.full(n, w)
    x1 = np.full(n, -1)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(y1, lab, ys)
    np.minimum.at(x0, lab, xs)
    np.maximum.at(x1, lab, xs)
    for k in range(n):
        win = (slice(max(y0[k] - reach, 0), min(y1[k] + reach + 1, h)),
               slice(max(x0[k] - reach, 0), min(x1[k] + reach + 1, w)))
        d = _distance_to(labels[win] == k + 1)
        a, b = d1[win], d2[win]
        d2[win] = np.minimum(np.maximum(a, d), b)
        d1[win] = np.minimum(a, d)
    return d1, d2
