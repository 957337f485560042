"""Offline evaluation: run a model over a dataset, accumulate a confusion matrix, report scores.

`evaluate` works on any model whose output is `(B, H, W, K)`: K-channel softmax probabilities or
logits are reduced with argmax; a single sigmoid channel is thresholded (0.5 on probabilities,
0 on logits) and scored as two classes (background, foreground).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import keras
import numpy as np

from vggunet.errors import ArgumentError
from vggunet.metrics import confusion_matrix, scores_from_confusion

__all__ = ["evaluate", "format_scores", "output_is_logits", "predict_labels", "write_json_atomic"]


def write_json_atomic(data: Any, path: str | os.PathLike) -> Path:
    """Writes `data` as JSON to `path` atomically (temp file in the same folder, fsync, rename).

    Args:
        data: JSON-serializable data.
        path: destination file; its folder is created.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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


def predict_labels(probs: Any, *, from_logits: bool = False, threshold: float = 0.5) -> np.ndarray:
    """Predicted class labels `(B, H, W)` from `(B, H, W, K)` model outputs.

    Args:
        probs: model outputs; K == 1 is a sigmoid channel.
        from_logits: whether a single channel holds logits (thresholded at 0 then).
        threshold: probability threshold for a single channel.

    Returns:
        int64 labels.
    """
    array = np.asarray(keras.ops.convert_to_numpy(probs))
    if array.shape[-1] == 1:
        cut = 0.0 if from_logits else threshold
        return (array[..., 0] > cut).astype(np.int64)
    return np.argmax(array, axis=-1).astype(np.int64)


def _batches(dataset: Any, batch_size: int = 8) -> Iterable[tuple]:
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 3) and all(
        isinstance(part, np.ndarray) for part in dataset
    ):
        n = len(dataset[0])
        for start in range(0, n, batch_size):
            yield tuple(part[start:start + batch_size] for part in dataset)
        return
    yield from dataset


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
        verbose: print the per-class table.
        threshold: probability threshold for a single sigmoid channel.

    Returns:
        `scores_from_confusion(cm)` (per_class_iou, mean_iou, per_class_dice, mean_dice,
        pixel_accuracy, pixel_error, present, num_pixels) plus `class_names`, `num_classes`
        (scored), `confusion_matrix` (rows truth, columns prediction), `true_pixels` and
        `pred_pixels` per class, and `num_images`.
    """
    channels = int(model.output_shape[-1])
    if num_classes is None:
        num_classes = channels
    size = 2 if num_classes == 1 else int(num_classes)
    if channels not in (1, size) and not (channels == 1 and size == 2):
        raise ArgumentError(
            f"model {model.name!r} outputs {channels} channel(s) but num_classes={num_classes}."
        )
    if class_names is None:
        class_names = ["background", "foreground"] if channels == 1 else [
            f"class{i}" for i in range(size)
        ]
    class_names = [str(name) for name in class_names]
    if len(class_names) != size:
        raise ArgumentError(f"class_names has {len(class_names)} names for {size} classes.")
    from_logits = output_is_logits(model)

    cm = np.zeros((size, size), dtype=np.int64)
    n_images = 0
    for batch in _batches(dataset):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise ArgumentError("dataset must yield (images, masks) or (images, masks, weights).")
        images, masks = batch[0], np.asarray(batch[1])
        outputs = model.predict_on_batch(images)
        labels = predict_labels(outputs, from_logits=from_logits, threshold=threshold)
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

    result = scores_from_confusion(cm)
    result.update({
        "class_names": class_names,
        "num_classes": size,
        "confusion_matrix": cm.tolist(),
        "true_pixels": [int(v) for v in cm.sum(axis=1)],
        "pred_pixels": [int(v) for v in cm.sum(axis=0)],
        "num_images": n_images,
        "ignore_index": ignore_index,
    })
    if verbose:
        print(format_scores(result), file=sys.stdout)
    if out_json is not None:
        write_json_atomic(result, out_json)
        if verbose:
            print(f"Wrote {out_json}")
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
