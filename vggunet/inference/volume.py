"""Whole-scan prediction of volumes with a 3D model: a sliding window of blended patches.

A scan of any size (e.g. BraTS's 240×240×155×4) is covered by patches of the model's input
size; along each axis the windows start every ``patch - overlap`` voxels and the last one ends
at the border (an axis shorter than the patch gets one window, centred, zero-padded like the
training sampler pads). Patches are cut, standardised (as in training) and predicted
``batch_size`` at a time, weighted by a blending window and summed into one ``(H, W, D, K)``
accumulator and one ``(H, W, D)`` weight map; the stack of all patches is never built, so peak
memory is ``batch_size`` patches plus those two arrays.

Blending windows (``BLEND_MODES``): ``"gaussian"`` (sigma = 1/8 of the patch per axis, MONAI's
default, peak 1 in the centre, floored at ``GAUSSIAN_FLOOR`` so every voxel keeps a weight),
``"linear"`` (a ramp over the overlap at each end, 1 inside: the 2D tiler's window) and
``"constant"`` (a plain mean of the overlapping patches).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from vggunet import choices
from vggunet.checks import check_bool, check_choice, check_int, check_number
from vggunet.console import Progress
from vggunet.errors import ArgumentError, PredictionError
from vggunet.inference.predict import _check_finite, _check_numbers, _quiet_retracing
from vggunet.inference.tiling import _window_1d

__all__ = ["BLEND_MODES", "LABEL_MODES", "GAUSSIAN_FLOOR", "predict_volume", "volume_labels",
           "blend_window"]

BLEND_MODES = choices.BLEND_MODES
LABEL_MODES = ("auto", "argmax", "threshold")
GAUSSIAN_FLOOR = 1e-3
"""The smallest Gaussian weight: the corners of a patch would otherwise weigh ~1e-11."""
_GAUSSIAN_SIGMA_FRACTION = 1 / 8  # MONAI's sigma_scale=0.125
_LOGIT_ACTIVATIONS = ("sigmoid", "softmax")

Standardize = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Arguments and the model's layout
# --------------------------------------------------------------------------------------------


def _model_layout(model: Any) -> tuple[str, tuple[int | None, ...], int]:
    """(data format, spatial input size (None where free), channels) of a 3D model."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1 or len(tuple(inputs[0].shape)) != 5:
        raise PredictionError(
            f"predict_volume needs a Keras model with one 5D volume input, got "
            f"{type(model).__name__} with inputs {[tuple(i.shape) for i in inputs or []]}."
        )
    shape = tuple(inputs[0].shape)[1:]
    formats = [layer.data_format for layer in getattr(model, "layers", [])
               if getattr(layer, "data_format", None) in ("channels_first", "channels_last")]
    if formats:
        data_format = formats[0]
    else:  # no layer says: Keras's setting, as the model's own layers would have used
        import keras

        data_format = keras.config.image_data_format()
    if data_format == "channels_first":
        channels, spatial = shape[0], shape[1:]
    else:
        channels, spatial = shape[-1], shape[:3]
    if channels is None:
        raise PredictionError(f"the model's input {shape} has no fixed channel count.")
    return data_format, tuple(None if s is None else int(s) for s in spatial), int(channels)


def _patch_size(patch: Any, fixed: tuple[int | None, ...]) -> tuple[int, int, int]:
    if patch is None:
        if None in fixed:
            raise ArgumentError(
                f"patch=None takes the model's fixed input size, but the model accepts any "
                f"size ({fixed}); give patch=(h, w, d)."
            )
        return tuple(fixed)  # type: ignore[return-value]
    values = (patch,) * 3 if not isinstance(patch, (tuple, list)) else tuple(patch)
    if len(values) != 3:
        raise ArgumentError(f"patch must be an integer or 3 integers, got {patch!r}.")
    size = tuple(check_int(v, "patch") for v in values)
    for axis, (want, have) in enumerate(zip(fixed, size)):
        if want is not None and want != have:
            raise ArgumentError(
                f"the model takes a fixed input of {fixed}; patch must match it, got {patch!r} "
                f"(axis {axis})."
            )
    return size  # type: ignore[return-value]


def _overlap_voxels(overlap: Any, patch: Sequence[int]) -> tuple[int, int, int]:
    """Per-axis overlap in voxels from a fraction in [0, 1) or 3 voxel counts."""
    if isinstance(overlap, (tuple, list)):
        if len(overlap) != 3:
            raise ArgumentError(f"overlap must be a fraction or 3 voxel counts, got {overlap!r}.")
        voxels = tuple(check_int(v, "overlap", minimum=0) for v in overlap)
    else:
        fraction = check_number(overlap, "overlap", low=0, high=1, high_open=True)
        # Rounding may reach the patch (0.9 of 4 voxels): keep windows advancing.
        return tuple(min(int(round(fraction * p)), p - 1) for p in patch)  # type: ignore
    for v, p in zip(voxels, patch):
        if v >= p:
            raise ArgumentError(
                f"overlap {overlap!r} gives {voxels} voxels, which must be below the patch "
                f"{tuple(patch)} on every axis (windows must advance)."
            )
    return voxels  # type: ignore[return-value]


def _resolve_standardize(standardize: Any) -> Standardize:
    """A callable image -> image from a method name or a callable."""
    if callable(standardize):
        return standardize
    if standardize == "none":
        return lambda image: image
    # One implementation of the methods: the training data's (imported when named).
    from vggunet.data.volume_patches import STANDARDIZE_METHODS, standardize_volume

    method = check_choice(standardize, STANDARDIZE_METHODS, "standardize")
    return lambda image: standardize_volume(image, method)


def _prepare_volume(volume: Any, channels: int) -> np.ndarray:
    array = np.asarray(volume)
    _check_numbers(array, "volume", "vggunet.data.read_volume")
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or 0 in array.shape:
        raise PredictionError(f"volume must be (H, W, D) or (H, W, D, C), got {array.shape}.")
    if array.shape[-1] != channels:
        raise PredictionError(
            f"volume has {array.shape[-1]} channels (shape {array.shape}) but the model "
            f"expects {channels}."
        )
    array = array.astype(np.float32, copy=False)
    _check_finite(array, "volume")
    return array


# --------------------------------------------------------------------------------------------
# Windows and weights
# --------------------------------------------------------------------------------------------


def window_starts(size: int, patch: int, overlap: int) -> list[int]:
    """Start offsets of the windows along one axis.

    Windows advance by ``patch - overlap``; the last one ends at the border. An axis shorter
    than the patch gets one window starting before it (negative), centred: the voxels
    outside the volume are zeros, as ``pad_to_shape`` pads for training.

    Args:
        size: length of the volume's axis.
        patch: window length.
        overlap: voxels shared by neighbouring windows, ``< patch``.

    Returns:
        The sorted start offsets.

    Example:
        >>> window_starts(10, 4, 2), window_starts(9, 4, 0), window_starts(3, 4, 2)
        ([0, 2, 4, 6], [0, 4, 5], [0])
    """
    if size <= patch:
        return [-((patch - size) // 2)]
    stride = patch - overlap
    starts = list(range(0, size - patch, stride))
    return starts + [size - patch]


def blend_window(patch: Sequence[int], blend: str = "gaussian",
                 overlap: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """The weight of each voxel of a patch when overlapping patches are blended.

    Args:
        patch: ``(h, w, d)``.
        blend: one of ``BLEND_MODES``.
        overlap: voxels of overlap per axis (the ``"linear"`` ramp's length).

    Returns:
        ``(h, w, d)`` float32, > 0 everywhere, at most 1.

    Example:
        >>> w = blend_window((5, 5, 5), "gaussian")
        >>> float(w[2, 2, 2]), bool(w[0, 2, 2] < w[1, 2, 2] < 1)
        (1.0, True)
        >>> [round(float(v), 3) for v in blend_window((6, 1, 1), "linear", (2, 0, 0))[:, 0, 0]]
        [0.333, 0.667, 1.0, 1.0, 0.667, 0.333]
    """
    blend = check_choice(blend, BLEND_MODES, "blend")
    axes = []
    for length, shared in zip(patch, overlap):
        if blend == "gaussian":
            index = np.arange(length, dtype=np.float64) - (length - 1) / 2
            sigma = max(length * _GAUSSIAN_SIGMA_FRACTION, 1e-6)
            axes.append(np.exp(-0.5 * (index / sigma) ** 2))
        elif blend == "linear":
            axes.append(_window_1d(length, shared).astype(np.float64))
        else:
            axes.append(np.ones(length))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    if blend == "gaussian":
        weights = np.maximum(weights, GAUSSIAN_FLOOR)
    return weights.astype(np.float32)


def _cut(image: np.ndarray, corner: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The patch at `corner` (may lie partly outside the volume: zeros there)."""
    out = np.zeros((*patch, image.shape[-1]), dtype=np.float32)
    src, dst = _overlap_slices(image.shape[:3], corner, patch)
    out[dst] = image[src]
    return out


def _overlap_slices(shape: Sequence[int], corner: Sequence[int],
                    patch: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(volume slices, patch slices) of the part of a window inside the volume."""
    src, dst = [], []
    for size, start, length in zip(shape, corner, patch):
        lo, hi = max(start, 0), min(start + length, size)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    return tuple(src), tuple(dst)


# --------------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------------


def _activate(scores: np.ndarray, from_logits: Any) -> np.ndarray:
    if from_logits is False:
        return scores
    if from_logits is True:  # the 2D rule: softmax, sigmoid for one channel
        from_logits = "sigmoid" if scores.shape[-1] == 1 else "softmax"
    if from_logits == "sigmoid":
        return (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def _run(model: Any, batch: np.ndarray, data_format: str, from_logits: Any) -> np.ndarray:
    """One forward pass of a channels-last (B, h, w, d, C) batch; (B, h, w, d, K) back."""
    x = np.moveaxis(batch, -1, 1) if data_format == "channels_first" else batch
    with _quiet_retracing():
        out = model.predict_on_batch(np.ascontiguousarray(x, dtype=np.float32))
    if isinstance(out, (list, tuple, dict)):
        raise PredictionError("the model has several outputs; predict_volume needs one.")
    out = np.asarray(out, dtype=np.float32)
    if data_format == "channels_first" and out.ndim == 5:
        out = np.moveaxis(out, 1, -1)
    if out.ndim != 5 or out.shape[:4] != batch.shape[:4]:
        raise PredictionError(
            f"the model maps a batch of {tuple(x.shape)} to {tuple(out.shape)}; predict_volume "
            f"needs an output of the input's spatial size with a class axis ({data_format})."
        )
    return _activate(out, from_logits)


def _run_tta(model: Any, batch: np.ndarray, data_format: str, from_logits: Any,
             tta: bool) -> np.ndarray:
    """`_run`, averaged over the 8 flip combinations of the spatial axes when `tta`."""
    if not tta:
        return _run(model, batch, data_format, from_logits)
    total = np.zeros((), np.float32)
    flips = [axes for n in range(4) for axes in itertools.combinations((1, 2, 3), n)]
    for axes in flips:
        flipped = np.flip(batch, axes) if axes else batch
        out = _run(model, flipped, data_format, from_logits)
        total = total + (np.flip(out, axes) if axes else out)
    return total / np.float32(len(flips))


def _batches(corners: list[tuple[int, int, int]], batch_size: int) -> Iterator[list[Any]]:
    for start in range(0, len(corners), batch_size):
        yield corners[start:start + batch_size]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def predict_volume(model: Any, volume: Any, *, patch: Any = None, overlap: Any = 0.5,
                   batch_size: int = 2, blend: str = "gaussian", standardize: Any = "lab",
                   tta: bool = False, verbose: bool = False,
                   from_logits: bool | str = False) -> np.ndarray:
    """Per-voxel class probabilities of a whole scan, predicted in a sliding window.

    See the module docstring for the windows and the blending. Each patch is standardised on
    its own before the forward pass, as training standardises sampled patches. The model's
    data format is read from its layers (channels-first models get transposed batches); the
    volume and the result are channels last.

    Args:
        model: a Keras 3D model with one 5D input, e.g. ``build_unet_3d``.
        volume: ``(H, W, D, C)`` or ``(H, W, D)`` (one channel) raw intensities.
        patch: ``(h, w, d)`` window, or one int for a cube; None: the model's fixed input size.
        overlap: fraction of the patch shared by neighbours, in [0, 1), or 3 voxel counts.
        batch_size: patches per forward pass (the memory bound).
        blend: one of ``BLEND_MODES``.
        standardize: a method of ``vggunet.data.volume_patches.STANDARDIZE_METHODS``
            (``"lab"``, ``"zscore"``, ``"none"``) or a callable ``(h, w, d, C) -> same``.
        tta: average the 8 flip combinations of the three spatial axes (flipped back).
        verbose: show a progress bar over the patches.
        from_logits: the model outputs logits: ``"sigmoid"`` or ``"softmax"`` is applied to each
            patch's output; True applies 2D ``predict_proba``'s rule (softmax, sigmoid for one
            channel); False (default) keeps the model's own activation.

    Returns:
        ``(H, W, D, K)`` float32 probabilities.

    Raises:
        ArgumentError: On a bad patch, overlap, batch size, blend or standardize.
        PredictionError: On a volume or model that does not fit.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((None, None, None, 2)),
        ...                           keras.layers.Conv3D(3, 1, activation="softmax")])
        >>> probs = predict_volume(model, np.ones((9, 7, 5, 2)), patch=4, standardize="none")
        >>> probs.shape, bool(np.allclose(probs.sum(-1), 1, atol=1e-5))
        ((9, 7, 5, 3), True)
    """
    data_format, fixed, channels = _model_layout(model)
    size = _patch_size(patch, fixed)
    voxels = _overlap_voxels(overlap, size)
    batch_size = check_int(batch_size, "batch_size")
    weights = blend_window(size, blend, voxels)
    tta = check_bool(tta, "tta")
    if from_logits not in (False, True, *_LOGIT_ACTIVATIONS):
        raise ArgumentError(f"from_logits must be True, False or one of {_LOGIT_ACTIVATIONS}, "
                            f"got {from_logits!r}.")
    standardize_fn = _resolve_standardize(standardize)
    image = _prepare_volume(volume, channels)
    shape = image.shape[:3]
    corners = list(itertools.product(
        *(window_starts(n, p, v) for n, p, v in zip(shape, size, voxels))))
    batch_size = min(batch_size, len(corners))
    acc: np.ndarray | None = None
    total = np.zeros(shape, dtype=np.float32)
    with Progress(len(corners), unit="patch", verbose=verbose) as progress:
        for chunk in _batches(corners, batch_size):
            # A short last batch is filled with zeros: one batch shape, one traced function.
            batch = np.zeros((batch_size, *size, channels), dtype=np.float32)
            for i, corner in enumerate(chunk):
                batch[i] = standardize_fn(_cut(image, corner, size))
            out = _run_tta(model, batch, data_format, from_logits, tta)
            if acc is None:
                acc = np.zeros((*shape, out.shape[-1]), dtype=np.float32)
            for corner, probs in zip(chunk, out):
                src, dst = _overlap_slices(shape, corner, size)
                w = weights[dst]
                acc[src] += probs[dst] * w[..., None]
                total[src] += w
            progress.advance(len(chunk))
    assert acc is not None  # there is always at least one window
    acc /= total[..., None]
    return acc


def volume_labels(probabilities: Any, mode: str = "auto", threshold: float = 0.5) -> np.ndarray:
    """Class labels of a volume's probabilities.

    Args:
        probabilities: ``(H, W, D, K)`` (any leading shape works).
        mode: ``"argmax"`` (softmax outputs: classes 0..K-1), ``"threshold"`` (sigmoid
            multi-label outputs for classes 1..K: a voxel takes the highest class index whose
            probability is ``> threshold``, else 0), or ``"auto"``: argmax when the channels sum
            to 1 at every voxel and K > 1, else threshold.
        threshold: the threshold mode's cut.

    Returns:
        ``(H, W, D)`` int32 labels.

    Example:
        >>> p = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.9], [0.1, 0.2, 0.3]], "float32")
        >>> volume_labels(p, "argmax").tolist(), volume_labels(p, "threshold").tolist()
        ([0, 2, 2], [1, 3, 0])
    """
    mode = check_choice(mode, LABEL_MODES, "mode")
    threshold = check_number(threshold, "threshold", low=0, high=1)
    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.ndim < 1 or probs.shape[-1] < 1:
        raise ArgumentError(f"probabilities need a class axis last, got shape {probs.shape}.")
    if mode == "auto":
        softmax = probs.shape[-1] > 1 and np.allclose(probs.sum(axis=-1), 1.0, atol=1e-3)
        mode = "argmax" if softmax else "threshold"
    if mode == "argmax":
        return np.argmax(probs, axis=-1).astype(np.int32)
    above = probs > threshold
    # The last channel above the threshold: its index from the end, reversed, + 1 for class.
    last = probs.shape[-1] - np.argmax(above[..., ::-1], axis=-1)
    return np.where(above.any(axis=-1), last, 0).astype(np.int32)
