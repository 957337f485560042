"""Offline evaluation: run a model over a dataset, accumulate a confusion matrix, report scores.

`evaluate` works on any model whose output is `(B, H, W, K)`: K-channel softmax probabilities or
logits are reduced with argmax; a single sigmoid channel is thresholded (0.5 on probabilities,
0 on logits) and scored as two classes (background, foreground).
"""

from __future__ import annotations

import math
import os
import sys
import types
from typing import Any, Iterable, Sequence

import keras
import numpy as np

from vggunet.checks import check_bool
from vggunet.console import Progress, Say, resolve_say
from vggunet.errors import ArgumentError
from vggunet.fileio import write_json_atomic  # was defined here; others import it from here
from vggunet.inference.labels import scores_to_labels
from vggunet.inference.multiscale import check_scales, predict_multiscale
from vggunet.metrics import confusion_matrix, scores_from_confusion

__all__ = ["check_data_fits_model", "evaluate", "format_scores", "output_data_format",
           "output_is_logits", "predict_labels", "write_json_atomic"]

_EVAL_BATCH = 8
"""Images per forward pass when `evaluate` gets numpy arrays."""


def output_is_logits(model: keras.Model) -> bool:
    """Whether the model's last layer emits logits (no softmax/sigmoid at the end).

    vggunet's `build_vgg_unet` ends in a float32 `Activation` (softmax/sigmoid); the lab's
    `build_unet` ends in a plain 1×1 `Conv2D` (logits).

    Args:
        model: a Keras model.

    Returns:
        True when the last layer is not a softmax/sigmoid activation.
    """
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", str(activation)) if activation is not None else ""
    return name not in ("softmax", "sigmoid")


def output_data_format(model: keras.Model) -> str:
    """Where the model's output keeps its classes: `"channels_first"` or `"channels_last"`.

    Read from the last layer that has a `data_format` (the head convolution of the lab's 3D
    U-Net built with `data_format="channels_first"`); models without one are channels last.

    Args:
        model: a Keras model.

    Returns:
        The data format of the output's class axis.
    """
    for layer in reversed(model.layers):
        data_format = getattr(layer, "data_format", None)
        if data_format in ("channels_first", "channels_last"):
            return data_format
    return "channels_last"


def _image_shape(data: Any, fixed_size: bool = False) -> tuple | None:
    """The shape of the images `data` yields ((B, ...) with None where unknown), if it says.

    A dataset of images of unknown size shows its first batch's when `fixed_size` (the model
    takes one size only, and Keras would fail on that batch with a deep traceback)."""
    spec = getattr(data, "element_spec", None)  # a tf.data.Dataset
    if isinstance(spec, (tuple, list)) and spec and hasattr(spec[0], "shape"):
        shape = spec[0].shape
        if shape.rank is None:
            return None
        if fixed_size and None in shape.as_list()[1:-1] and hasattr(data, "take"):
            for batch in data.take(1):
                return (None, *tuple(batch[0].shape)[1:])
        return tuple(shape.as_list())
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        return (None, *tuple(data[0].shape)[1:])  # arrays: the batch size is not the data's
    return None


def _class_count_problem(channels: int, num_classes: int | None) -> str:
    """Why `num_classes` does not fit a model of `channels` outputs ("" if it does)."""
    if num_classes is None or num_classes == channels or (channels == 1 and num_classes == 2):
        return ""
    return (f"outputs {channels} channel(s) (1 = a sigmoid for 2 classes) but num_classes="
            f"{num_classes}")


def check_data_fits_model(model: keras.Model, data: Any, *, num_classes: int | None = None,
                          what: str = "data") -> None:
    """Refuses, before any step runs, data the model cannot take: other channels, another
    rank, or another size where the model's input has a fixed one; and a class count other
    than the model's outputs. Data that does not say its shape (generators) is not checked.

    Args:
        model: a model with one image input.
        data: a `tf.data.Dataset` or `(images, masks[, weights])` arrays (other data: only
            the class count is checked).
        num_classes: the classes the labels hold (None: not checked).
        what: the data's name in the message, e.g. `"train_data"`.

    Raises:
        ArgumentError: what does not fit, naming both shapes.

    Example:
        >>> from vggunet import build_unet
        >>> model = build_unet(input_size=(32, 32, 3), n_filters=2)
        >>> check_data_fits_model(model, (np.zeros((2, 32, 32, 1)), np.zeros((2, 32, 32))))
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: data has images of shape (None, 32, 32, 1) but model
        'unet' takes (None, 32, 32, 3): 1 channel(s), not 3 (read the images with channels=3,
        CLI: --channels 3).
    """
    channels_first = output_data_format(model) == "channels_first"
    outputs = int(model.output_shape[1 if channels_first else -1])
    problem = _class_count_problem(outputs, num_classes)
    if problem:
        raise ArgumentError(f"model {model.name!r} {problem}; give the model's class count or "
                            f"a model built for {num_classes} classes.")
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return
    expected = tuple(inputs[0].shape)
    spatial_dims = expected[2:] if channels_first else expected[1:-1]
    shape = _image_shape(data, fixed_size=None not in spatial_dims)
    if shape is None:
        return
    head = f"{what} has images of shape {shape} but model {model.name!r} takes {expected}"
    if len(shape) != len(expected):
        raise ArgumentError(f"{head}: {len(shape) - 2}D images for a {len(expected) - 2}D model.")
    axis = 1 if channels_first else -1
    got, want = shape[axis], expected[axis]
    if got is not None and want is not None and got != want:
        raise ArgumentError(f"{head}: {got} channel(s), not {want} (read the images with "
                            f"channels={want}, CLI: --channels {want}).")
    spatial = range(2, len(shape)) if channels_first else range(1, len(shape) - 1)
    if any(shape[i] is not None and expected[i] is not None and shape[i] != expected[i]
           for i in spatial):
        size = "x".join(str(expected[i]) for i in spatial)
        raise ArgumentError(f"{head}: the model has a fixed input size; resize or crop the "
                            f"images to {size} (CLI: --size {size}, or --crop {size} when "
                            f"training), or build the model for any size (input_shape=(None, "
                            f"None, C)).")


def predict_labels(probs: Any, *, from_logits: bool = False, threshold: float = 0.5) -> np.ndarray:
    """Predicted class labels `(B, H, W)` from `(B, H, W, K)` model outputs.

    `scores_to_labels` on the outputs of any Keras backend (tensors are converted to numpy).

    Args:
        probs: model outputs; K == 1 is a sigmoid channel.
        from_logits: whether a single channel holds logits (thresholded at 0 then).
        threshold: probability threshold for a single channel.

    Returns:
        int64 labels.
    """
    return scores_to_labels(keras.ops.convert_to_numpy(probs), from_logits=from_logits,
                            threshold=threshold, dtype=np.int64)


def _batches(dataset: Any) -> Iterable[tuple]:
    if _is_arrays(dataset):
        n = len(dataset[0])
        for start in range(0, n, _EVAL_BATCH):
            yield tuple(part[start:start + _EVAL_BATCH] for part in dataset)
        return
    yield from dataset


def _is_arrays(dataset: Any) -> bool:
    return isinstance(dataset, (tuple, list)) and len(dataset) in (2, 3) and all(
        isinstance(part, np.ndarray) for part in dataset)


def _num_batches(dataset: Any) -> int:
    """Batches `_batches` will yield when that is known up front, else 0 (no bar)."""
    if _is_arrays(dataset):
        return math.ceil(len(dataset[0]) / _EVAL_BATCH)
    cardinality = getattr(dataset, "cardinality", None)
    if callable(cardinality):  # a tf.data.Dataset: -1 infinite, -2 unknown
        return max(0, int(cardinality()))
    try:
        return len(dataset)
    except TypeError:
        return 0


def _class_names(model: keras.Model, num_classes: int | None,
                 class_names: Sequence[str] | None) -> list[str]:
    """Checks `num_classes` against the model's output and names each scored class."""
    channels = int(model.output_shape[-1])
    if num_classes is None:
        num_classes = channels
    size = 2 if num_classes == 1 else int(num_classes)
    problem = _class_count_problem(channels, size)
    if problem:
        raise ArgumentError(f"model {model.name!r} {problem}.")
    if class_names is None:
        class_names = ["background", "foreground"] if channels == 1 else [
            f"class{i}" for i in range(size)
        ]
    names = [str(name) for name in class_names]
    if len(names) != size:
        raise ArgumentError(f"class_names has {len(names)} names for {size} classes.")
    return names


def _batch_labels(model: keras.Model, images: Any, from_logits: bool, threshold: float,
                  tta: bool, scales: tuple[float, ...]) -> np.ndarray:
    """Labels of one batch: one forward pass, or the mean over scales and flips."""
    if not tta and scales == (1.0,):
        return predict_labels(model.predict_on_batch(images), from_logits=from_logits,
                              threshold=threshold)
    # predict_multiscale averages probabilities (logits are turned into them first).
    proba = predict_multiscale(model, np.asarray(images), scales=scales, flip=tta,
                               from_logits=from_logits)
    return predict_labels(proba, threshold=threshold)


def _confusion(model: keras.Model, dataset: Any, size: int, ignore_index: int | None,
               threshold: float, verbose: bool, tta: bool = False,
               scales: tuple[float, ...] = (1.0,)) -> tuple[np.ndarray, int]:
    """The (size, size) confusion matrix over the dataset, and the number of images."""
    from_logits = output_is_logits(model)
    cm = np.zeros((size, size), dtype=np.int64)
    n_images = 0
    with Progress(_num_batches(dataset), unit="batch", verbose=verbose) as progress:
        for batch in _batches(dataset):
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise ArgumentError(
                    "dataset must yield (images, masks) or (images, masks, weights).")
            images, masks = batch[0], np.asarray(batch[1])
            labels = _batch_labels(model, images, from_logits, threshold, tta, scales)
            if masks.ndim == labels.ndim + 1 and masks.shape[-1] == 1:
                masks = masks[..., 0]
            masks = masks.astype(np.int64)
            if len(batch) == 3:
                weights = np.asarray(batch[2])
                if weights.ndim == 1:
                    weights = weights.reshape((-1,) + (1,) * (masks.ndim - 1))
                keep = np.broadcast_to(weights > 0, masks.shape)
                masks, labels = masks[keep], labels[keep]
            cm += confusion_matrix(masks, labels, size, ignore_index)
            n_images += int(np.asarray(images).shape[0])
            progress.advance()
    return cm, n_images


def evaluate(
    model: keras.Model,
    dataset: Any,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
    out_json: str | os.PathLike | None = None,
    verbose: bool = True,
    threshold: float = 0.5,
    say: Say | None = None,
    tta: bool = False,
    scales: Sequence[float] = (1.0,),
) -> dict[str, Any]:
    """Scores a segmentation model on a dataset with an accumulated confusion matrix.

    Args:
        model: a model mapping `(B, H, W, C)` images to `(B, H, W, K)` outputs.
        dataset: iterable of `(images, masks)` or `(images, masks, weights)` batches (e.g. a
            `tf.data.Dataset`), or a tuple of numpy arrays `(images, masks[, weights])`. Pixels
            with weight 0 are not counted.
        num_classes: classes scored (default: the model's output channels; 1 = binary, scored
            as 2 classes).
        ignore_index: mask value whose pixels are not counted.
        class_names: one name per scored class (default `class0`, `class1`, ...).
        out_json: if given, the result is written there as JSON (atomically).
        verbose: show a progress bar over the batches (when their number is known: numpy
            arrays, a list, a `tf.data.Dataset` of known cardinality) and print the
            per-class table.
        threshold: probability threshold for a single sigmoid channel.
        say: where the table and the "Wrote" line go (default: print when `verbose`); given,
            it shows them even with `verbose=False` (the CLI's `--quiet` keeps the table).
        tta: flip test-time augmentation: average each image's probabilities with those of its
            left-right mirror (`predict_multiscale`).
        scales: multi-scale inference: predict each image resized by every scale (bilinear),
            resize the probabilities back to the mask's size and average them, e.g.
            `(0.75, 1.0, 1.25)`; `(1.0,)` without `tta` is one plain forward pass.

    Returns:
        `scores_from_confusion(cm)` (per_class_iou, mean_iou, per_class_dice, mean_dice,
        pixel_accuracy, pixel_error, present, num_pixels) plus `class_names`, `num_classes`
        (scored), `confusion_matrix` (rows truth, columns prediction), `true_pixels` and
        `pred_pixels` per class, `num_images`, `ignore_index`, `tta` and `scales`.
    """
    names = _class_names(model, num_classes, class_names)
    check_data_fits_model(model, dataset, what="dataset")
    tta, scales = check_bool(tta, "tta"), check_scales(scales)
    cm, n_images = _confusion(model, dataset, len(names), ignore_index, threshold, verbose,
                              tta, scales)
    result = scores_from_confusion(cm)
    result.update({
        "class_names": names,
        "num_classes": len(names),
        "confusion_matrix": cm.tolist(),
        "true_pixels": [int(v) for v in cm.sum(axis=1)],
        "pred_pixels": [int(v) for v in cm.sum(axis=0)],
        "num_images": n_images,
        "ignore_index": ignore_index,
        "tta": tta,
        "scales": list(scales),
    })
    say = resolve_say(verbose, say)
    say(format_scores(result))
    if out_json is not None:
        write_json_atomic(result, out_json)
        say(f"Wrote {out_json}")
    return result


def format_scores(result: dict[str, Any]) -> str:
    """An aligned per-class table (IoU, Dice, true/predicted pixels) and the summary scores.

    Args:
        result: the dict `evaluate` returns.

    Returns:
        The table as text, one line per class, then the means.
    """
    names = result["class_names"]
    width = max(5, *(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'true px':>12}  {'pred px':>12}"]
    for i, name in enumerate(names):
        lines.append(
            f"{name:<{width}}  {result['per_class_iou'][i]:7.4f}  "
            f"{result['per_class_dice'][i]:7.4f}  {result['true_pixels'][i]:12d}  "
            f"{result['pred_pixels'][i]:12d}"
        )
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mean IoU':<16}{result['mean_iou']:.4f}")
    lines.append(f"{'mean Dice':<16}{result['mean_dice']:.4f}")
    lines.append(f"{'pixel accuracy':<16}{result['pixel_accuracy']:.4f}")
    lines.append(f"{'pixel error':<16}{result['pixel_error']:.4f}")
    return "\n".join(lines)


class _CallableModule(types.ModuleType):
    """`vggunet.evaluate` names both this module and its function. Importing the module (as
    `compile_model` does) makes Python bind the package attribute to the module, so the module
    itself calls `evaluate`: `vggunet.evaluate(model, data)` works whatever was imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
