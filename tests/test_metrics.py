"""Tests for vggunet.metrics, plus a compile/fit/save/reload round trip."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from keras import ops

from _objective_cases import P1, PROBS, Y, random_batch
from vggunet import losses as L
from vggunet import metrics as M

# Y, P1, PROBS: a 2x2 image, 2 classes (see _objective_cases):
#   y  = [[0, 1],      p1 = [[0.2, 0.6],    argmax = [[0, 1],
#         [1, 1]]            [0.9, 0.3]]              [1, 0]]
# Confusion matrix cm[t, p]: t0 -> p0 once; t1 -> p1 twice, p0 once:
#   cm = [[1, 0],
#         [1, 2]]
# IoU0 = 1 / (1 + 2 - 1) = 1/2, IoU1 = 2 / (3 + 2 - 2) = 2/3, mIoU = 7/12
# Dice0 = 2 / (1 + 2) = 2/3, Dice1 = 4 / (3 + 2) = 4/5, mean = 11/15
# accuracy = 3/4
CM = np.array([[1, 0], [1, 2]])


def value(x):
    return ops.convert_to_numpy(x)


def measure(metric, *batches):
    for batch in batches:
        metric.update_state(*batch)
    return value(metric.result())


def test_hand_computed_values():
    assert measure(M.MeanIoU(2), (Y, PROBS)) == pytest.approx(7 / 12, rel=1e-6)
    np.testing.assert_allclose(measure(M.PerClassIoU(2), (Y, PROBS)), [1 / 2, 2 / 3], rtol=1e-6)
    assert measure(M.DiceScore(2), (Y, PROBS)) == pytest.approx(11 / 15, rel=1e-6)
    assert measure(M.PixelAccuracy(), (Y, PROBS)) == pytest.approx(3 / 4)
    metric = M.MeanIoU(2)
    metric.update_state(Y, PROBS)
    np.testing.assert_array_equal(value(metric.total_cm), CM)


def test_sigmoid_logits_and_label_inputs_agree():
    logits = np.log(PROBS)  # argmax is unchanged by softmax
    sigmoid = P1[..., None]
    sigmoid_logits = np.log(sigmoid / (1 - sigmoid))
    int_labels = np.argmax(PROBS, axis=-1)
    assert measure(M.MeanIoU(2), (Y, logits)) == pytest.approx(7 / 12, rel=1e-6)
    for make in (lambda **kw: M.MeanIoU(2, **kw), lambda **kw: M.MeanIoU(1, **kw)):
        assert measure(make(), (Y, sigmoid)) == pytest.approx(7 / 12, rel=1e-6)
        assert measure(make(from_logits=True), (Y, sigmoid_logits)) == pytest.approx(
            7 / 12, rel=1e-6
        )
        assert measure(make(), (Y[..., None], int_labels)) == pytest.approx(7 / 12, rel=1e-6)
    # num_classes=1 means a binary sigmoid output: two classes are scored.
    assert value(M.PerClassIoU(1).result()).shape == (2,)
    assert measure(M.PixelAccuracy(), (Y, sigmoid)) == pytest.approx(3 / 4)
    # Threshold 0.5 on probabilities: 0.5 itself is background.
    half = np.full((1, 1, 2, 1), 0.5, dtype="float32")
    assert measure(M.PixelAccuracy(), (np.array([[[0, 1]]]), half)) == pytest.approx(0.5)


def test_absent_classes_are_excluded_from_means_and_zero_in_vector():
    # 3 classes declared, class 2 never appears in truth or prediction.
    probs = np.concatenate([PROBS, np.zeros_like(PROBS[..., :1])], axis=-1)
    assert measure(M.MeanIoU(3), (Y, probs)) == pytest.approx(7 / 12, rel=1e-6)
    assert measure(M.DiceScore(3), (Y, probs)) == pytest.approx(11 / 15, rel=1e-6)
    np.testing.assert_allclose(
        measure(M.PerClassIoU(3), (Y, probs)), [1 / 2, 2 / 3, 0.0], rtol=1e-6
    )
    # Nothing counted yet: 0, not NaN.
    for metric in (M.MeanIoU(3), M.DiceScore(3), M.PixelAccuracy()):
        assert value(metric.result()) == 0.0
    assert not np.isnan(value(M.PerClassIoU(3).result())).any()


def test_perfect_prediction_gives_iou_one():
    labels, _ = random_batch(0)
    onehot = np.eye(3, dtype="float32")[labels]
    assert measure(M.MeanIoU(3), (labels, onehot)) == pytest.approx(1.0)
    np.testing.assert_allclose(measure(M.PerClassIoU(3), (labels, onehot)), [1, 1, 1])
    assert measure(M.DiceScore(3), (labels, onehot)) == pytest.approx(1.0)
    assert measure(M.PixelAccuracy(), (labels, onehot)) == pytest.approx(1.0)


# Every metric class, for 3 classes, taking the remaining keyword arguments.
ALL_METRICS = [
    lambda **kw: M.MeanIoU(3, **kw),
    lambda **kw: M.PerClassIoU(3, **kw),
    lambda **kw: M.DiceScore(3, **kw),
    lambda **kw: M.PixelAccuracy(**kw),
]


@pytest.mark.parametrize("make", ALL_METRICS)
def test_accumulates_over_batches_and_resets(make):
    (l1, p1), (l2, p2), (l3, p3) = random_batch(1), random_batch(2), random_batch(3, (1, 4, 6))
    metric = make()
    stepwise = measure(metric, (l1, p1), (l2, p2), (l3, p3))
    at_once = measure(
        make(),
        (
            np.concatenate([l1.reshape(-1), l2.reshape(-1), l3.reshape(-1)])[None],
            np.concatenate([p1.reshape(-1, 3), p2.reshape(-1, 3), p3.reshape(-1, 3)])[None],
        ),
    )
    np.testing.assert_allclose(stepwise, at_once, rtol=1e-6)
    # The result differs from the last batch alone, so state really persisted.
    assert not np.allclose(stepwise, measure(make(), (l3, p3)))
    metric.reset_state()
    assert np.all(value(metric.result()) == 0)
    np.testing.assert_allclose(measure(metric, (l3, p3)), measure(make(), (l3, p3)), rtol=1e-6)


@pytest.mark.parametrize("make", ALL_METRICS)
@pytest.mark.parametrize("ignore_index", [255, -1])
def test_ignored_pixels_change_nothing(make, ignore_index):
    labels, logits = random_batch(4)
    rng = np.random.default_rng(5)
    drop = rng.uniform(size=labels.shape) < 0.3
    masked = np.where(drop, ignore_index, labels)
    got = measure(make(ignore_index=ignore_index), (masked, logits))
    expected = measure(make(), (labels[~drop][None], logits[~drop][None]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sample_weight_weights_pixel_counts():
    # Weights [[1, 1], [3, 2]] on pixels (t, p) = (0,0), (1,1), (1,1), (1,0):
    #   cm = [[1, 0],
    #         [2, 1 + 3]]
    # IoU0 = 1 / (1 + 3 - 1) = 1/3, IoU1 = 4 / (6 + 4 - 4) = 2/3,
    # accuracy = (1 + 4) / 7.
    sw = np.array([[[1.0, 1.0], [3.0, 2.0]]], dtype="float32")
    metric = M.PerClassIoU(2)
    metric.update_state(Y, PROBS, sample_weight=sw)
    np.testing.assert_allclose(value(metric.total_cm), [[1, 0], [2, 4]])
    np.testing.assert_allclose(value(metric.result()), [1 / 3, 2 / 3], rtol=1e-6)
    accuracy = M.PixelAccuracy()
    accuracy.update_state(Y, PROBS, sample_weight=sw[..., None])
    assert value(accuracy.result()) == pytest.approx(5 / 7, rel=1e-6)
    # A per-image weight (B,) scales every pixel of the image.
    per_image = M.MeanIoU(2)
    per_image.update_state(Y, PROBS, sample_weight=np.array([2.0]))
    np.testing.assert_allclose(value(per_image.total_cm), 2 * CM)


def test_out_of_range_labels_are_not_counted():
    labels = np.array([[[0, 1], [7, 1]]])
    metric = M.MeanIoU(2)
    metric.update_state(labels, PROBS)
    assert value(metric.total_cm).sum() == 3


# --------------------------------------------------------------------------
# NumPy helpers
# --------------------------------------------------------------------------


def test_confusion_matrix_and_scores_by_hand():
    cm = M.confusion_matrix(Y, np.argmax(PROBS, -1), 2)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64
    scores = M.scores_from_confusion(cm)
    assert scores["per_class_iou"] == pytest.approx([1 / 2, 2 / 3])
    assert scores["mean_iou"] == pytest.approx(7 / 12)
    assert scores["per_class_dice"] == pytest.approx([2 / 3, 4 / 5])
    assert scores["mean_dice"] == pytest.approx(11 / 15)
    assert scores["pixel_accuracy"] == pytest.approx(0.75)
    assert scores["pixel_error"] == pytest.approx(0.25)
    assert scores["present"] == [True, True]
    assert scores["num_pixels"] == 4


def test_confusion_matrix_ignore_index_and_agreement_with_metric():
    labels, logits = random_batch(6)
    labels[0, 0] = 255
    pred = np.argmax(logits, -1)
    cm = M.confusion_matrix(labels[..., None], pred, 3, ignore_index=255)
    assert cm.sum() == labels.size - labels.shape[2]
    metric = M.MeanIoU(3, ignore_index=255)
    metric.update_state(labels, logits)
    np.testing.assert_array_equal(value(metric.total_cm), cm)
    assert M.scores_from_confusion(metric.total_cm)["mean_iou"] == pytest.approx(
        float(value(metric.result())), rel=1e-6
    )


def test_scores_with_absent_class_and_empty_matrix():
    scores = M.scores_from_confusion(np.array([[2, 0, 0], [0, 0, 0], [1, 0, 1]]))
    # IoU0 = 2/3, IoU1 absent, IoU2 = 1/2 -> mean over present = 7/12
    assert scores["per_class_iou"] == pytest.approx([2 / 3, 0.0, 1 / 2])
    assert scores["present"] == [True, False, True]
    assert scores["mean_iou"] == pytest.approx(7 / 12)
    empty = M.scores_from_confusion(np.zeros((2, 2)))
    assert empty["mean_iou"] == 0.0 and empty["pixel_accuracy"] == 0.0
    assert empty["pixel_error"] == 0.0


def test_numpy_helper_validation():
    with pytest.raises(ValueError, match=r"\[5\]"):
        M.confusion_matrix(np.array([0, 5]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        M.confusion_matrix(np.array([0, 1, 1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="float"):
        M.confusion_matrix(np.array([0, 1]), np.array([0.2, 0.7]), 2)
    with pytest.raises(ValueError, match=re.escape("(2, 3)")):
        M.scores_from_confusion(np.zeros((2, 3)))


# --------------------------------------------------------------------------
# Configuration, factory, validation
# --------------------------------------------------------------------------


def test_get_metrics_factory():
    metrics = M.get_metrics(["miou", "iou", "dice", "accuracy"], 4, 255)
    assert [type(m) for m in metrics] == [M.MeanIoU, M.PerClassIoU, M.DiceScore, M.PixelAccuracy]
    assert all(m.ignore_index == 255 for m in metrics)
    assert metrics[0].num_classes == 4
    assert [type(m) for m in M.get_metrics("MIoU, accuracy", 2)] == [M.MeanIoU, M.PixelAccuracy]
    with pytest.raises(ValueError, match=r"'f1'.*miou, iou, dice, accuracy"):
        M.get_metrics(["miou", "f1"], 3)


@pytest.mark.parametrize(
    "build, bad",
    [
        (lambda: M.MeanIoU(0), "0"),
        (lambda: M.PerClassIoU(-2), "-2"),
        (lambda: M.DiceScore(2.0), "2.0"),
        (lambda: M.MeanIoU(3, ignore_index="x"), "'x'"),
        (lambda: M.PixelAccuracy(ignore_index=0.5), "0.5"),
        (lambda: M.get_metrics(["accuracy"], 0), "0"),
        (lambda: M.confusion_matrix([0], [0], num_classes=-1), "-1"),
    ],
)
def test_invalid_arguments_raise_with_the_bad_value(build, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        build()


def test_channel_mismatch_raises():
    with pytest.raises(ValueError, match="2 channel"):
        M.MeanIoU(3).update_state(Y, PROBS)


def test_metric_serialization_round_trip():
    for metric in (
        M.MeanIoU(3, ignore_index=255, name="miou", from_logits=True),
        M.PerClassIoU(2),
        M.DiceScore(1, ignore_index=-1),
        M.PixelAccuracy(ignore_index=0),
    ):
        data = keras.saving.serialize_keras_object(metric)
        assert data["registered_name"].startswith("vggunet>")
        restored = keras.saving.deserialize_keras_object(data)
        assert type(restored) is type(metric)
        assert restored.get_config() == metric.get_config()


# --------------------------------------------------------------------------
# End to end: compile, fit one step, save, reload without custom_objects
# --------------------------------------------------------------------------


def test_model_trains_saves_and_reloads_without_custom_objects(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, size=(4, 8, 8, 1)).astype("int32")
    y[:, :2, :2] = 255
    pixel_weight = rng.uniform(0.5, 1.5, size=(4, 8, 8)).astype("float32")

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    loss = L.CombinedLoss(
        L.SparseCategoricalCrossentropy(ignore_index=255, class_weights=[1.0, 2.0, 1.0]),
        L.DiceLoss(num_classes=3, ignore_index=255),
        weights=(1.0, 0.5),
    )
    model.compile(
        optimizer="adam",
        loss=loss,
        metrics=M.get_metrics(["miou", "iou", "dice", "accuracy"], 3, 255),
    )
    history = model.fit(x, y, sample_weight=pixel_weight, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert set(history.history) >= {"mean_iou", "per_class_iou", "dice_score", "pixel_accuracy"}

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # safe_mode, no custom_objects

    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = reloaded.evaluate(x, y, verbose=0, return_dict=True)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-6)
    for key in ("mean_iou", "dice_score", "pixel_accuracy"):
        assert after[key] == pytest.approx(before[key], rel=1e-6)
    np.testing.assert_allclose(after["per_class_iou"], before["per_class_iou"], rtol=1e-6)
    assert reloaded.get_compile_config()["metrics"] == model.get_compile_config()["metrics"]
    assert reloaded.get_compile_config()["loss"] == model.get_compile_config()["loss"]
    # The loss on a fixed batch is reproduced by the reloaded loss object.
    probs = model.predict(x, verbose=0)
    assert float(value(reloaded.loss(y, probs))) == pytest.approx(float(value(loss(y, probs))))


def test_unknown_metric_names_suggest_the_closest():
    from vggunet.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"'mean_iou'.*Did you mean 'miou'\?"):
        M.get_metrics("mean_iou", 2)
    with pytest.raises(ArgumentError, match=r"'acuracy'.*Did you mean 'accuracy'\?"):
        M.get_metrics(["miou", "acuracy"], 2)
    with pytest.raises(ArgumentError, match=r"Unknown metric 3; valid names are"):
        M.get_metrics([3], 2)
    with pytest.raises(ArgumentError, match="num_classes must be a positive integer, got 0"):
        M.get_metrics([], 0)


def test_metric_default_names_and_config_keys_are_those_of_saved_files():
    keys = ["name", "dtype", "num_classes", "ignore_index", "from_logits"]
    for cls, name in ((M.MeanIoU, "mean_iou"), (M.PerClassIoU, "per_class_iou"),
                      (M.DiceScore, "dice_score")):
        metric = cls(2)
        assert metric.name == name and list(metric.get_config()) == keys
        assert [v.name for v in metric.variables] == ["total_confusion_matrix"]
    accuracy = M.PixelAccuracy()
    assert accuracy.name == "pixel_accuracy"
    assert list(accuracy.get_config()) == ["name", "dtype", "ignore_index", "from_logits"]
    assert [v.name for v in accuracy.variables] == ["correct", "total"]
    with pytest.raises(ValueError, match="from_logits must be True or False, got 'no'"):
        M.PixelAccuracy(from_logits="no")
