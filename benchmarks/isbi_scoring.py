"""Held-out scoring of the ISBI transfer benchmark (`benchmarks/transfer_isbi.py`, issue 5).

Binary (membrane / cell) scores from a confusion matrix, the held-out arrays, the per-epoch
learning-curve callback, plain / TTA / mirror-padded scores of a trained model, and where its
errors sit (class edges, image border).
"""

from __future__ import annotations

import os
import time
from typing import Any


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded (recorded beside every timing).

    Returns:
        Three floats.
    """
    return [round(v, 2) for v in os.getloadavg()]


def binary_scores(cm: Any) -> dict[str, float]:
    """Pixel error, per-class Dice / IoU and mean IoU of a 2-class confusion matrix.

    Args:
        cm: (2, 2) confusion matrix, rows true membrane / cell.

    Returns:
        `pixel_error`, `membrane_dice`, `cell_dice`, `membrane_iou`, `cell_iou`, `mean_iou`.
    """
    from vggunet.metrics import scores_from_confusion

    s = scores_from_confusion(cm)
    return {
        "pixel_error": round(float(s["pixel_error"]), 5),
        "membrane_dice": round(float(s["per_class_dice"][0]), 5),
        "cell_dice": round(float(s["per_class_dice"][1]), 5),
        "membrane_iou": round(float(s["per_class_iou"][0]), 5),
        "cell_iou": round(float(s["per_class_iou"][1]), 5),
        "mean_iou": round(float(s["mean_iou"]), 5),
    }


def held_out_arrays(held_out: list[Any], scale: str) -> tuple[Any, Any]:
    """The held-out images and masks as arrays, scaled like the training data.

    Args:
        held_out: `(image_path, mask_path)` pairs.
        scale: "raw" ([0, 255]) or "unit" ([0, 1]).

    Returns:
        `(images (N, H, W, 1) float32, masks (N, H, W) class indices)`.
    """
    import numpy as np

    from vggunet.data import load_image, load_mask

    images = np.stack([load_image(p, channels=1) for p, _ in held_out])
    if scale == "unit":
        images = images / np.float32(255.0)
    masks = np.stack([load_mask(m, "binary", num_classes=2) for _, m in held_out])
    return images, masks


def held_out_curve(held_out: list[Any], scale: str, *, steps_per_epoch: int) -> Any:
    """A Keras callback scoring the held-out images after every epoch (the learning curve).

    Runs after vggunet's own callbacks (BatchNorm re-estimation, checkpoint), so it scores what
    `last.keras` holds. Its own time is kept in `eval_s` and left out of the training wall time.

    Args:
        held_out: `(image_path, mask_path)` pairs.
        scale: "raw" or "unit" input scaling (as the training data).
        steps_per_epoch: training steps per epoch (for the step column).

    Returns:
        The callback; `points` holds one dict per epoch: step, training wall seconds so far,
        plain held-out scores.
    """
    import keras
    import numpy as np

    from vggunet.metrics import confusion_matrix

    images, masks = held_out_arrays(held_out, scale)

    class _Curve(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.points: list[dict[str, Any]] = []
            self.eval_s = 0.0
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            t0 = time.perf_counter()
            train_s = t0 - self.start - self.eval_s
            out = self.model.predict(images, batch_size=2, verbose=0)
            pred = np.argmax(out, axis=-1)  # argmax is the same on logits and probabilities
            scores = binary_scores(confusion_matrix(masks, pred, 2))
            self.eval_s += time.perf_counter() - t0
            self.points.append({
                "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                "train_wall_s": round(train_s, 1),
                "loss": round(float((logs or {}).get("loss", float("nan"))), 5),
                "load": load_average()[0], **scores,
            })
            print(f"  held-out after step {self.points[-1]['step']}: pixel error "
                  f"{scores['pixel_error']:.4f} at {train_s:.0f} s of training", flush=True)

    return _Curve()


def score_prediction(model: Any, images: Any, masks: Any, *, from_logits: bool = False,
                     **predict: Any) -> tuple[dict[str, float], Any]:
    """Held-out scores of one way of predicting (`predict_proba` with `predict`'s options).

    Args:
        model: the trained model.
        images: (N, H, W, 1) held-out images, scaled like the training data.
        masks: (N, H, W) true class indices.
        from_logits: the model outputs logits (the lab model).
        **predict: `predict_proba` options, e.g. `tta=True`, `mirror_pad=64`.

    Returns:
        `(scores, predicted class indices (N, H, W))`.
    """
    import numpy as np

    from vggunet.metrics import confusion_matrix
    from vggunet.predict import predict_proba

    proba = predict_proba(model, images, batch_size=2, from_logits=from_logits, **predict)
    pred = np.argmax(proba, axis=-1)
    return binary_scores(confusion_matrix(masks, pred, 2)), pred


def mirror_scores(model: Any, images: Any, masks: Any, mirror_pad: int, *,
                  tta: bool, from_logits: bool = False) -> dict[str, Any]:
    """Held-out scores with the U-Net paper's mirrored border context (`mirror_pad`).

    Args:
        model: the trained model.
        images: (N, H, W, 1) held-out images, scaled like the training data.
        masks: (N, H, W) true class indices.
        mirror_pad: mirrored pixels added on each side (`predict_proba(mirror_pad=...)`).
        tta: also score mirror padding together with the 8-fold TTA.
        from_logits: the model outputs logits (the lab model).

    Returns:
        `{"mirror_pad": N, "mirror": scores[, "tta_mirror": scores]}`.
    """
    out: dict[str, Any] = {"mirror_pad": mirror_pad}
    for key, with_tta in (("mirror", False), ("tta_mirror", True)):
        if with_tta and not tta:
            continue
        out[key], _ = score_prediction(model, images, masks, from_logits=from_logits,
                                       tta=with_tta, mirror_pad=mirror_pad)
    return out


def error_breakdown(masks: Any, pred: Any, border: int = 32) -> dict[str, float]:
    """Where the pixel errors sit: on the labels' class edges, and near the image border.

    A pixel is on a class edge when its 3×3 neighbourhood in the label holds more than one
    class (the 1-px band on both sides of every membrane outline).

    Args:
        masks: (N, H, W) true class indices.
        pred: (N, H, W) predicted class indices.
        border: width in pixels of the image-border band.

    Returns:
        `edge_share` (pixels on class edges), `edge_error` / `off_edge_error` (error rate on /
        off them), `edge_error_share` (share of all errors on them), `border_share`,
        `border_error` / `interior_error` (error rate within / beyond `border` px of the edge).
    """
    import numpy as np
    from scipy import ndimage

    masks, pred = np.asarray(masks), np.asarray(pred)
    wrong = masks != pred
    edge = np.stack([ndimage.grey_dilation(m, size=3) != ndimage.grey_erosion(m, size=3)
                     for m in masks])
    height, width = masks.shape[1:]
    yy, xx = np.mgrid[:height, :width]
    near = np.minimum(np.minimum(yy, xx), np.minimum(height - 1 - yy, width - 1 - xx)) < border
    near = np.broadcast_to(near, masks.shape)

    def rate(where: Any) -> float:
        return round(float(wrong[where].mean()), 5) if where.any() else float("nan")

    return {
        "edge_share": round(float(edge.mean()), 5), "edge_error": rate(edge),
        "off_edge_error": rate(~edge),
        "edge_error_share": round(float(wrong[edge].sum() / max(1, wrong.sum())), 5),
        "border_px": border, "border_share": round(float(near.mean()), 5),
        "border_error": rate(near), "interior_error": rate(~near),
    }
