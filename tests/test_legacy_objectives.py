"""Losses and metrics compiled into `.keras` files of the previous release come back as written.

`tests/fixtures/legacy_86619a9/` holds models compiled by main 86619a9 (`make_fixtures.py`
there): `compiled.keras` ("ce+dice" with class weights and ignore_index 255, every metric class),
`compiled_focal.keras`, `compiled_jaccard.keras` and `checkpoint_last.keras` (a training run's
checkpoint). Each is loaded with `vggunet.load_model(path, compile=True)`; the restored loss and
metric objects must be vggunet's classes with the settings the file was written with, serialize
back to the file's own compile config, and score a batch as NumPy re-implementations of the
formulas do. (tests/test_legacy_files.py checks the predictions.)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_86619a9"
IGNORE = 255


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    with np.load(FIXTURES / "expected.npz") as data:
        return data["image"]  # (2, 45, 70, 1); the small U-Nets predict 3 classes


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    rng = np.random.default_rng(14)
    y = rng.integers(0, 3, (2, 45, 70)).astype("int32")
    y[:, :5, :] = IGNORE  # a band of ignored pixels
    return y


def load(name: str):
    from vggunet import load_model

    model = load_model(FIXTURES / name, compile=True)
    return model


def written_compile_config(name: str) -> dict:
    with zipfile.ZipFile(FIXTURES / name) as archive:
        return json.loads(archive.read("config.json"))["compile_config"]


def without_module(config):
    """A serialized config without its `module` entries (they name the defining module, which
    moved; Keras finds vggunet's classes by `registered_name`)."""
    if isinstance(config, dict):
        return {k: without_module(v) for k, v in config.items() if k != "module"}
    if isinstance(config, list):
        return [without_module(v) for v in config]
    return config


def restored_metrics(model, x, y) -> dict:
    """Evaluate once (which builds the compiled metrics), then the metric objects by name."""
    model.evaluate(x, y, verbose=0)
    (compiled,) = [m for m in model.metrics if m.name == "compile_metrics"]
    return {m.name: m for m in compiled.metrics}


# NumPy references of the formulas in vggunet.losses (float64, ignored pixels removed).


def _kept(y, probs, ignore):
    keep = np.ones(y.shape, bool) if ignore is None else y != ignore
    return y[keep], probs[keep].astype(np.float64)


def np_crossentropy(y, probs, class_weights=None, ignore=None, gamma=0.0, alpha=None):
    y, p = _kept(y, probs, ignore)
    p_t = np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)
    terms = -((1.0 - p_t) ** gamma) * np.log(p_t)
    if class_weights is not None:
        terms = terms * np.asarray(class_weights)[y]
    if alpha is not None:  # more than two classes: a uniform factor
        terms = terms * alpha
    return terms.mean()


def np_overlap(y, probs, kind, class_weights=None, ignore=None, smooth=1.0):
    y, p = _kept(y, probs, ignore)
    onehot = np.eye(p.shape[-1])[y]
    inter, pred, true = (p * onehot).sum(0), p.sum(0), onehot.sum(0)
    if kind == "dice":
        scores = (2 * inter + smooth) / (pred + true + smooth)
    else:
        scores = (inter + smooth) / (pred + true - inter + smooth)
    weights = np.ones(len(scores)) if class_weights is None else np.asarray(class_weights)
    return 1.0 - (weights * scores).sum() / weights.sum()


def np_scores(y, probs, ignore=None) -> dict:
    """IoU per class, mean IoU and Dice over present classes, pixel accuracy."""
    y, p = _kept(y, probs, ignore)
    pred = p.argmax(-1)
    cm = np.zeros((p.shape[-1],) * 2)
    np.add.at(cm, (y, pred), 1)
    tp, rows, cols = np.diag(cm), cm.sum(1), cm.sum(0)
    present = rows + cols > 0
    iou = np.where(present, tp / np.maximum(rows + cols - tp, 1), 0)
    dice = np.where(present, 2 * tp / np.maximum(rows + cols, 1), 0)
    return {"per_class_iou": iou, "mean_iou": iou[present].mean(),
            "dice_score": dice[present].mean(), "pixel_accuracy": tp.sum() / cm.sum()}


# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compiled.keras", "compiled_focal.keras",
                                  "compiled_jaccard.keras", "checkpoint_last.keras"])
def test_restored_objectives_serialize_to_what_the_file_holds(name):
    import keras

    model = load(name)
    written = written_compile_config(name)
    assert without_module(keras.saving.serialize_keras_object(model.loss)) == \
        without_module(written["loss"])
    assert without_module(model.get_compile_config()["metrics"]) == \
        without_module(written["metrics"])


def test_compiled_ce_dice_file_restores_its_settings_and_scores(image, labels):
    from vggunet import losses as L
    from vggunet import metrics as M

    model = load("compiled.keras")
    loss = model.loss
    assert type(loss) is L.CombinedLoss and loss.name == "ce_dice_loss"
    assert loss.weights == (1.0, 1.0)
    ce, dice = loss.first, loss.second
    assert type(ce) is L.SparseCategoricalCrossentropy and type(dice) is L.DiceLoss
    assert (ce.from_logits, ce.ignore_index, ce.class_weights, ce.reduction) == \
        (False, IGNORE, (0.5, 1.0, 2.0), "sum_over_batch_size")
    assert (dice.num_classes, dice.from_logits, dice.ignore_index, dice.smooth,
            dice.class_weights) == (3, False, IGNORE, 1.0, (0.5, 1.0, 2.0))

    metrics = restored_metrics(model, image, labels)
    assert {name: type(m) for name, m in metrics.items()} == {
        "mean_iou": M.MeanIoU, "dice_score": M.DiceScore, "pixel_accuracy": M.PixelAccuracy,
        "per_class_iou": M.PerClassIoU}
    assert all(m.ignore_index == IGNORE and m.from_logits is False for m in metrics.values())
    assert {m.num_classes for m in metrics.values() if hasattr(m, "num_classes")} == {3}

    probs = np.asarray(model.predict_on_batch(image))
    cw = (0.5, 1.0, 2.0)
    expected_loss = (np_crossentropy(labels, probs, cw, IGNORE)
                     + np_overlap(labels, probs, "dice", cw, IGNORE))
    result = model.evaluate(image, labels, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert float(model.compute_loss(image, labels, probs)) == pytest.approx(expected_loss,
                                                                             rel=1e-4)
    expected = np_scores(labels, probs, IGNORE)
    for key in ("mean_iou", "dice_score", "pixel_accuracy"):
        assert result[key] == pytest.approx(expected[key], rel=1e-5), key
    np.testing.assert_allclose(result["per_class_iou"], expected["per_class_iou"], rtol=1e-5)


def test_compiled_focal_file_restores_its_settings_and_scores(image, labels):
    from vggunet import losses as L
    from vggunet import metrics as M

    model = load("compiled_focal.keras")
    loss = model.loss
    assert type(loss) is L.FocalLoss and loss.name == "focal_loss"
    assert (loss.gamma, loss.alpha, loss.ignore_index, loss.class_weights, loss.from_logits) == \
        (1.5, 0.25, IGNORE, None, False)
    clean = np.where(labels == IGNORE, 0, labels)
    metrics = restored_metrics(model, image, clean)
    assert [type(m) for m in metrics.values()] == [M.PerClassIoU]
    assert (metrics["per_class_iou"].num_classes, metrics["per_class_iou"].ignore_index) == \
        (3, None)

    probs = np.asarray(model.predict_on_batch(image))
    result = model.evaluate(image, labels, verbose=0, return_dict=True)
    expected = np_crossentropy(labels, probs, ignore=IGNORE, gamma=1.5, alpha=0.25)
    assert result["loss"] == pytest.approx(expected, rel=1e-4)
    # The per-class IoU of the clean labels (no ignore_index in this file).
    result = model.evaluate(image, clean, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["per_class_iou"],
                               np_scores(clean, probs)["per_class_iou"], rtol=1e-5)


def test_compiled_jaccard_file_restores_its_settings_and_scores(image, labels):
    from vggunet import losses as L

    model = load("compiled_jaccard.keras")
    loss = model.loss
    assert type(loss) is L.JaccardLoss and loss.name == "jaccard_loss"
    assert (loss.num_classes, loss.smooth, loss.ignore_index, loss.class_weights,
            loss.from_logits) == (3, 0.5, None, None, False)
    assert model.get_compile_config()["metrics"] is None
    clean = np.where(labels == IGNORE, 1, labels)
    probs = np.asarray(model.predict_on_batch(image))
    expected = np_overlap(clean, probs, "jaccard", smooth=0.5)
    result = model.evaluate(image, clean, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(expected, rel=1e-4)


def test_checkpoint_restores_the_run_objectives_and_scores(image, labels):
    from vggunet import losses as L
    from vggunet import metrics as M

    model = load("checkpoint_last.keras")
    loss = model.loss
    assert type(loss) is L.CombinedLoss and loss.weights == (1.0, 1.0)
    assert (type(loss.first), type(loss.second)) == (L.SparseCategoricalCrossentropy, L.DiceLoss)
    assert (loss.first.ignore_index, loss.first.class_weights) == (None, None)
    assert (loss.second.num_classes, loss.second.smooth, loss.second.ignore_index) == \
        (3, 1.0, None)
    clean = np.where(labels == IGNORE, 2, labels)
    metrics = restored_metrics(model, image, clean)
    assert [type(m) for m in metrics.values()] == [M.MeanIoU, M.DiceScore, M.PixelAccuracy]
    assert all(m.ignore_index is None for m in metrics.values())

    probs = np.asarray(model.predict_on_batch(image))
    result = model.evaluate(image, clean, verbose=0, return_dict=True)
    expected_loss = np_crossentropy(clean, probs) + np_overlap(clean, probs, "dice")
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)
    expected = np_scores(clean, probs)
    for key in ("mean_iou", "dice_score", "pixel_accuracy"):
        assert result[key] == pytest.approx(expected[key], rel=1e-5), key
    # One training step from the saved optimizer state runs and keeps the loss finite.
    step = model.train_on_batch(image, clean, return_dict=True)
    assert np.isfinite(step["loss"])
