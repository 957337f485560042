"""Tests for vggunet.losses: hand-computed values, masking, weights, saving."""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest
from keras import ops

from _objective_cases import P1, PROBS, Y, random_batch
from vggunet import losses as L

# Y, P1, PROBS: a 2x2 image, 2 classes (see _objective_cases); the probability
# of the true class per pixel:
P_T = np.array([0.8, 0.6, 0.9, 0.3])


def value(x) -> float:
    return float(ops.convert_to_numpy(x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------


def test_crossentropy_matches_hand_value():
    # mean of -log p_t = -(ln .8 + ln .6 + ln .9 + ln .3) / 4
    expected = -(math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.3)) / 4
    assert value(L.SparseCategoricalCrossentropy()(Y, PROBS)) == pytest.approx(expected, rel=1e-6)
    # A trailing label axis of 1 is squeezed.
    assert value(L.SparseCategoricalCrossentropy()(Y[..., None], PROBS)) == pytest.approx(
        expected, rel=1e-6
    )


def test_crossentropy_class_weights_hand_value():
    # weights [2, 1]: the single class-0 pixel (p_t = .8) counts twice;
    # the denominator stays the pixel count, 4.
    expected = -(2 * math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.3)) / 4
    loss = L.SparseCategoricalCrossentropy(class_weights=[2.0, 1.0])
    assert value(loss(Y, PROBS)) == pytest.approx(expected, rel=1e-6)


def test_crossentropy_pixel_sample_weight_hand_value():
    # sample_weight [[1, 0], [2, 1]] scales the numerator only (Keras rule).
    sw = np.array([[[1.0, 0.0], [2.0, 1.0]]], dtype="float32")
    expected = -(math.log(0.8) + 2 * math.log(0.9) + math.log(0.3)) / 4
    loss = L.SparseCategoricalCrossentropy()
    assert value(loss(Y, PROBS, sample_weight=sw)) == pytest.approx(expected, rel=1e-6)
    # "mean_with_sample_weight" divides by sum(w) = 4 as well here; use
    # other weights to tell them apart: w = [[1, 0], [1, 0]] -> / 2.
    sw2 = np.array([[[1.0, 0.0], [1.0, 0.0]]], dtype="float32")
    loss2 = L.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
    expected2 = -(math.log(0.8) + math.log(0.9)) / 2
    assert value(loss2(Y, PROBS, sample_weight=sw2)) == pytest.approx(expected2, rel=1e-6)
    per_pixel = L.SparseCategoricalCrossentropy(reduction="none")(Y, PROBS)
    np.testing.assert_allclose(
        ops.convert_to_numpy(per_pixel), -np.log(P_T).reshape(1, 2, 2), rtol=1e-6
    )


def test_dice_loss_hand_value():
    # Class 0: I = .8 (pixel 0), P = .8 + .4 + .1 + .7 = 2.0, T = 1
    # Class 1: I = .6 + .9 + .3 = 1.8, P = .2 + .6 + .9 + .3 = 2.0, T = 3
    # smooth = 0: dice0 = 1.6 / 3 = .53333, dice1 = 3.6 / 5 = .72
    expected0 = 1 - (1.6 / 3 + 3.6 / 5) / 2
    assert value(L.DiceLoss(smooth=0.0)(Y, PROBS)) == pytest.approx(expected0, rel=1e-6)
    # smooth = 1: (1.6 + 1) / (3 + 1) = .65, (3.6 + 1) / (5 + 1) = .76667
    expected1 = 1 - (2.6 / 4 + 4.6 / 6) / 2
    assert value(L.DiceLoss()(Y, PROBS)) == pytest.approx(expected1, rel=1e-6)


def test_dice_loss_class_weights_hand_value():
    # Weighted class mean: 1 - (1 * .53333 + 3 * .72) / (1 + 3)
    expected = 1 - (1 * (1.6 / 3) + 3 * (3.6 / 5)) / 4
    loss = L.DiceLoss(num_classes=2, smooth=0.0, class_weights=(1.0, 3.0))
    assert value(loss(Y, PROBS)) == pytest.approx(expected, rel=1e-6)


def test_jaccard_loss_hand_value():
    # IoU_c = I / (P + T - I): 0.8 / 2.2 and 1.8 / 3.2
    expected = 1 - (0.8 / 2.2 + 1.8 / 3.2) / 2
    assert value(L.JaccardLoss(smooth=0.0)(Y, PROBS)) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_hand_value():
    # gamma 2: -(1 - p_t)^2 log p_t = -(.04 ln .8 + .16 ln .6 + .01 ln .9 + .49 ln .3)/4
    terms = -((1 - P_T) ** 2) * np.log(P_T)
    assert value(L.FocalLoss()(Y, PROBS)) == pytest.approx(terms.mean(), rel=1e-6)
    # Binary alpha = .25: class-1 pixels (1, 2, 3) x .25, class-0 pixel x .75.
    alpha_t = np.array([0.75, 0.25, 0.25, 0.25])
    assert value(L.FocalLoss(alpha=0.25)(Y, PROBS)) == pytest.approx(
        (alpha_t * terms).mean(), rel=1e-6
    )
    # class_weights [2, 1] double the class-0 term.
    cw = np.array([2.0, 1.0, 1.0, 1.0])
    assert value(L.FocalLoss(class_weights=[2, 1])(Y, PROBS)) == pytest.approx(
        (cw * terms).mean(), rel=1e-6
    )


def test_focal_with_gamma_zero_is_crossentropy():
    labels, logits = random_batch(0)
    probs = softmax(logits)
    ce = value(L.SparseCategoricalCrossentropy()(labels, probs))
    assert value(L.FocalLoss(gamma=0.0)(labels, probs)) == pytest.approx(ce, rel=1e-6)


def test_combined_loss_is_weighted_sum():
    ce = L.SparseCategoricalCrossentropy()
    dice = L.DiceLoss()
    combined = L.CombinedLoss(ce, dice, weights=(0.5, 2.0))
    expected = 0.5 * value(ce(Y, PROBS)) + 2.0 * value(dice(Y, PROBS))
    assert value(combined(Y, PROBS)) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------
# Binary sigmoid, logits, dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.SparseCategoricalCrossentropy(),
        lambda: L.DiceLoss(),
        lambda: L.JaccardLoss(),
        lambda: L.FocalLoss(alpha=0.3),
    ],
)
def test_single_sigmoid_channel_equals_two_class_softmax(make):
    sigmoid_out = P1[..., None]  # (1, 2, 2, 1): probability of class 1
    assert value(make()(Y, sigmoid_out)) == pytest.approx(value(make()(Y, PROBS)), rel=1e-6)


@pytest.mark.parametrize(
    "cls", [L.SparseCategoricalCrossentropy, L.DiceLoss, L.JaccardLoss, L.FocalLoss]
)
def test_from_logits_equals_softmax_then_probabilities(cls):
    labels, logits = random_batch(1)
    from_logits = value(cls(from_logits=True)(labels, logits))
    from_probs = value(cls()(labels, softmax(logits)))
    assert from_logits == pytest.approx(from_probs, rel=1e-5)
    # Single channel: logits through a sigmoid.
    logit1 = logits[..., :1]
    prob1 = 1.0 / (1.0 + np.exp(-logit1))
    labels01 = labels % 2
    assert value(cls(from_logits=True)(labels01, logit1)) == pytest.approx(
        value(cls()(labels01, prob1)), rel=1e-5
    )


def test_crossentropy_from_logits_is_stable_for_extreme_logits():
    logits = np.array([[[[1000.0, -1000.0]]]], dtype="float32")
    loss = value(L.SparseCategoricalCrossentropy(from_logits=True)(np.array([[[1]]]), logits))
    assert loss == pytest.approx(2000.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_predictions_are_computed_in_float32(dtype):
    labels, logits = random_batch(2)
    low = ops.cast(logits, dtype)
    reference = ops.cast(low, "float32")  # same rounded inputs, float32 maths
    for cls in (L.SparseCategoricalCrossentropy, L.DiceLoss, L.FocalLoss):
        out = cls(from_logits=True)(labels, low)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        expected = value(cls(from_logits=True)(labels, reference))
        assert value(out) == pytest.approx(expected, rel=1e-6)


def test_perfect_prediction_gives_zero_overlap_losses():
    labels, _ = random_batch(3)
    onehot = np.eye(3, dtype="float32")[labels]
    assert value(L.DiceLoss()(labels, onehot)) == pytest.approx(0.0, abs=1e-6)
    assert value(L.JaccardLoss()(labels, onehot)) == pytest.approx(0.0, abs=1e-6)
    assert value(L.DiceLoss(smooth=0.0)(labels, onehot)) == pytest.approx(0.0, abs=1e-6)
    assert value(L.SparseCategoricalCrossentropy()(labels, onehot)) == pytest.approx(0.0, abs=1e-5)


def test_absent_class_with_zero_smooth_is_not_nan():
    # Class 2 never occurs in truth or prediction: it scores 1, not NaN.
    probs = np.concatenate([PROBS, np.zeros_like(PROBS[..., :1])], axis=-1)
    loss = value(L.DiceLoss(smooth=0.0)(Y, probs))
    assert loss == pytest.approx(1 - (1.6 / 3 + 3.6 / 5 + 1.0) / 3, rel=1e-6)


# --------------------------------------------------------------------------
# ignore_index and sample weights
# --------------------------------------------------------------------------

ALL_LOSSES = [
    lambda **kw: L.SparseCategoricalCrossentropy(**kw),
    lambda **kw: L.SparseCategoricalCrossentropy(class_weights=[1.0, 2.0, 0.5], **kw),
    lambda **kw: L.DiceLoss(**kw),
    lambda **kw: L.DiceLoss(smooth=0.0, class_weights=[1.0, 2.0, 0.5], **kw),
    lambda **kw: L.JaccardLoss(**kw),
    lambda **kw: L.FocalLoss(gamma=1.5, **kw),
    lambda **kw: L.CombinedLoss(
        L.SparseCategoricalCrossentropy(**kw), L.DiceLoss(**kw), weights=(1.0, 0.7)
    ),
]


@pytest.mark.parametrize("make", ALL_LOSSES)
@pytest.mark.parametrize("ignore_index", [255, -1])
def test_ignored_pixels_change_nothing(make, ignore_index):
    labels, logits = random_batch(4)
    probs = softmax(logits)
    # Ignore the last column: the reference is the same batch without it.
    masked = labels.copy()
    masked[:, :, -1] = ignore_index
    loss = make(ignore_index=ignore_index)
    got = value(loss(masked, probs))
    expected = value(make()(labels[:, :, :-1], probs[:, :, :-1]))
    assert got == pytest.approx(expected, rel=1e-6)
    # Scattered ignored pixels: compare with the valid pixels laid out as a
    # (1, N) "image" (both losses pool over all pixels of the batch).
    rng = np.random.default_rng(5)
    scattered = labels.copy()
    drop = rng.uniform(size=labels.shape) < 0.3
    scattered[drop] = ignore_index
    keep = ~drop
    got = value(loss(scattered, probs))
    expected = value(make()(labels[keep][None, :], probs[keep][None, :]))
    assert got == pytest.approx(expected, rel=1e-5)
    # The predictions at ignored pixels are irrelevant.
    noisy = probs.copy()
    noisy[drop] = softmax(rng.normal(size=noisy[drop].shape) * 5)
    assert value(loss(scattered, noisy)) == pytest.approx(got, rel=1e-6)


def test_all_pixels_ignored_gives_zero_crossentropy():
    labels = np.full((1, 2, 2), 255)
    loss = L.SparseCategoricalCrossentropy(ignore_index=255)
    assert value(loss(labels, PROBS)) == 0.0


@pytest.mark.parametrize("cls", [L.DiceLoss, L.JaccardLoss])
def test_overlap_sample_weight_acts_as_pixel_weights(cls):
    labels, logits = random_batch(6)
    probs = softmax(logits)
    rng = np.random.default_rng(7)
    sw = (rng.uniform(size=labels.shape) < 0.7).astype("float32")
    keep = sw > 0
    # Weight 0 removes a pixel from the sums...
    expected = value(cls()(labels[keep][None, :], probs[keep][None, :]))
    assert value(cls()(labels, probs, sample_weight=sw)) == pytest.approx(expected, rel=1e-5)
    # ... and weight 2 counts it twice.
    sw2 = np.where(keep, 2.0, 1.0).astype("float32")
    doubled_labels = np.concatenate([labels.reshape(-1), labels[keep]])[None, :]
    doubled_probs = np.concatenate([probs.reshape(-1, 3), probs[keep]])[None, :]
    expected2 = value(cls()(doubled_labels, doubled_probs))
    assert value(cls()(labels, probs, sample_weight=sw2)) == pytest.approx(expected2, rel=1e-5)


def test_per_sample_weight_is_broadcast():
    labels, logits = random_batch(8)
    probs = softmax(logits)
    ce = L.SparseCategoricalCrossentropy()
    per_image = np.array([1.0, 0.0], dtype="float32")
    # Image 1 weighted 0: numerator of image 0 only, denominator all pixels.
    expected = value(ce(labels[:1], probs[:1])) / 2
    assert value(ce(labels, probs, sample_weight=per_image)) == pytest.approx(expected, rel=1e-6)


def test_volumetric_inputs_are_supported():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, size=(1, 3, 4, 5))
    probs = softmax(rng.normal(size=(1, 3, 4, 5, 2)))
    flat = value(L.DiceLoss()(labels.reshape(1, -1), probs.reshape(1, -1, 2)))
    assert value(L.DiceLoss()(labels, probs)) == pytest.approx(flat, rel=1e-6)


# --------------------------------------------------------------------------
# Serialization and factory
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        L.SparseCategoricalCrossentropy(from_logits=True, ignore_index=255, class_weights=[1, 2]),
        L.DiceLoss(num_classes=2, ignore_index=0, smooth=0.5, class_weights=[1, 2]),
        L.JaccardLoss(num_classes=1, from_logits=True, class_weights=[0.5, 1.0]),
        L.FocalLoss(gamma=1.0, alpha=0.4, ignore_index=-1, class_weights=[1, 3]),
        L.CombinedLoss(L.SparseCategoricalCrossentropy(), L.JaccardLoss(smooth=0.0), (2.0, 1.0)),
    ],
)
def test_serialization_round_trip(loss):
    data = keras.saving.serialize_keras_object(loss)
    assert data["registered_name"].startswith("vggunet>")
    restored = keras.saving.deserialize_keras_object(data)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    labels = np.array([[[0, 1], [1, 0]]])
    assert value(restored(labels, PROBS)) == pytest.approx(value(loss(labels, PROBS)))


def test_get_config_holds_every_constructor_argument():
    import inspect

    for cls in (
        L.SparseCategoricalCrossentropy,
        L.DiceLoss,
        L.JaccardLoss,
        L.FocalLoss,
    ):
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert params <= set(cls().get_config()), cls
    combined = L.CombinedLoss("ce", "dice")
    assert {"first", "second", "weights", "name", "reduction", "dtype"} <= set(
        combined.get_config()
    )


def test_get_loss_names_and_routing():
    assert isinstance(L.get_loss("ce"), L.SparseCategoricalCrossentropy)
    assert isinstance(L.get_loss(" CrossEntropy "), L.SparseCategoricalCrossentropy)
    assert isinstance(L.get_loss("jaccard"), L.JaccardLoss)
    focal = L.get_loss("focal", gamma=1.0, num_classes=4, ignore_index=255)
    assert isinstance(focal, L.FocalLoss) and focal.gamma == 1.0 and focal.ignore_index == 255
    dice = L.get_loss("dice", num_classes=3, smooth=0.0)
    assert dice.num_classes == 3 and dice.smooth == 0.0
    combined = L.get_loss("ce+dice", num_classes=3, ignore_index=255, weights=(1.0, 2.0))
    assert isinstance(combined, L.CombinedLoss) and combined.weights == (1.0, 2.0)
    assert combined.first.ignore_index == 255 and combined.second.num_classes == 3
    valid = r"ce, crossentropy, dice, jaccard, focal, ce\+dice"
    with pytest.raises(ValueError, match=r"'bogus'.*" + valid):
        L.get_loss("bogus")
    with pytest.raises(TypeError, match="gamma"):
        L.get_loss("ce", gamma=2.0)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, bad",
    [
        (lambda: L.DiceLoss(num_classes=0), "0"),
        (lambda: L.JaccardLoss(num_classes=-3), "-3"),
        (lambda: L.DiceLoss(num_classes=2.5), "2.5"),
        (lambda: L.FocalLoss(gamma=-1.0), "-1.0"),
        (lambda: L.FocalLoss(alpha=1.5), "1.5"),
        (lambda: L.DiceLoss(smooth=-0.1), "-0.1"),
        (lambda: L.DiceLoss(num_classes=3, class_weights=[1.0, 2.0]), "[1.0, 2.0]"),
        (lambda: L.SparseCategoricalCrossentropy(class_weights=[1.0, -2.0]), "-2.0"),
        (lambda: L.SparseCategoricalCrossentropy(class_weights="abc"), "'abc'"),
        (lambda: L.SparseCategoricalCrossentropy(ignore_index=1.5), "1.5"),
        (lambda: L.SparseCategoricalCrossentropy(from_logits="yes"), "'yes'"),
        (lambda: L.CombinedLoss("ce", "dice", weights=(1.0,)), "(1.0,)"),
        (lambda: L.CombinedLoss("ce", "dice", weights=(1.0, -1.0)), "(1.0, -1.0)"),
        (lambda: L.CombinedLoss("ce", 42), "42"),
    ],
)
def test_invalid_arguments_raise_with_the_bad_value(build, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        build()


def test_call_time_shape_mismatches_raise():
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        L.SparseCategoricalCrossentropy(class_weights=[1, 1, 1])(Y, PROBS)
    with pytest.raises(ValueError, match="num_classes=3"):
        L.DiceLoss(num_classes=3)(Y, PROBS)
    with pytest.raises(ValueError, match=re.escape("(1, 2, 2, 2)")):
        L.DiceLoss()(np.zeros((1, 2, 2, 2)), PROBS)  # one-hot labels


def test_unknown_names_and_arguments_are_vggunet_errors_with_suggestions():
    from vggunet.errors import ArgumentError, VggUnetError

    with pytest.raises(ArgumentError, match=r"Unknown loss 'jacard'.*Did you mean 'jaccard'\?"):
        L.get_loss("jacard")
    with pytest.raises(ArgumentError,
                       match=r"Unknown loss 'ce dice'.*Did you mean 'ce\+dice' or 'dice'\?"):
        L.get_loss("ce dice")
    with pytest.raises(ArgumentError, match=r"Unknown loss 42"):
        L.get_loss(42)
    # A keyword no involved loss takes is a TypeError (as in Python) and a VggUnetError.
    with pytest.raises(TypeError, match=r"'dice'.*\['gamma'\]") as info:
        L.get_loss("dice", gamma=2.0)
    assert isinstance(info.value, VggUnetError)
    with pytest.raises(TypeError, match=r"\['smooth'\]") as info:
        L.get_loss(L.DiceLoss(), smooth=0.0)
    assert isinstance(info.value, VggUnetError)


def test_argument_errors_name_the_argument_and_what_is_valid():
    cases = [
        (lambda: L.DiceLoss(num_classes=0), "num_classes must be a positive integer or None"),
        (lambda: L.SparseCategoricalCrossentropy(from_logits=1),
         "from_logits must be True or False"),
        (lambda: L.FocalLoss(alpha=1.5), r"alpha must be a number in \[0, 1\]"),
        (lambda: L.FocalLoss(gamma=float("nan")), "gamma must be a number >= 0"),
        (lambda: L.JaccardLoss(smooth="x"), "smooth must be a number >= 0"),
        (lambda: L.FocalLoss(ignore_index="255"), "ignore_index must be an integer or None"),
        (lambda: L.DiceLoss(num_classes=1, class_weights=[1.0]), "num_classes=1 needs 2"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()


def test_default_names_and_config_keys_are_those_of_saved_files():
    # The names and config keys are part of the .keras format: files store them.
    expected = {
        L.SparseCategoricalCrossentropy: ("sparse_categorical_crossentropy",
                                          ["name", "reduction", "dtype", "from_logits",
                                           "ignore_index", "class_weights"]),
        L.FocalLoss: ("focal_loss", ["name", "reduction", "dtype", "from_logits",
                                     "ignore_index", "class_weights", "gamma", "alpha"]),
        L.DiceLoss: ("dice_loss", ["name", "reduction", "dtype", "num_classes", "from_logits",
                                   "ignore_index", "smooth", "class_weights"]),
        L.JaccardLoss: ("jaccard_loss", ["name", "reduction", "dtype", "num_classes",
                                         "from_logits", "ignore_index", "smooth",
                                         "class_weights"]),
    }
    for cls, (name, keys) in expected.items():
        loss = cls()
        assert loss.name == name and list(loss.get_config()) == keys, cls
    combined = L.get_loss("ce+dice", num_classes=2)
    assert combined.name == "ce_dice_loss"
    assert list(combined.get_config()) == ["name", "reduction", "dtype", "first", "second",
                                           "weights"]
    assert L.CombinedLoss("ce", "dice").name == "combined_loss"


class _Replicas:
    num_replicas_in_sync = 4


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute scaling")
def test_mean_losses_are_divided_by_the_replica_count(monkeypatch):
    """Under tf.distribute a replica's mean loss is divided by the replicas (gradients are
    summed)."""
    import tensorflow as tf

    labels, logits = random_batch(10)
    probs = softmax(logits)
    losses = {
        "mean": L.SparseCategoricalCrossentropy(),
        "mean_with_sample_weight": L.FocalLoss(reduction="mean_with_sample_weight"),
        "sum": L.SparseCategoricalCrossentropy(reduction="sum"),
        "dice": L.DiceLoss(),
        "ce+dice": L.get_loss("ce+dice", num_classes=3),
    }
    single = {key: value(loss(labels, probs)) for key, loss in losses.items()}
    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: _Replicas())
    scaled = {key: value(loss(labels, probs)) for key, loss in losses.items()}
    for key in ("mean", "mean_with_sample_weight", "dice", "ce+dice"):
        assert scaled[key] == pytest.approx(single[key] / 4, rel=1e-6), key
    # Like Keras, a sum is not scaled.
    assert scaled["sum"] == pytest.approx(single["sum"], rel=1e-6)


def test_objectives_use_no_private_keras_api():
    from pathlib import Path

    import vggunet

    root = Path(vggunet.__file__).parent
    for path in [*root.joinpath("losses").glob("*.py"), *root.joinpath("metrics").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "keras.src" not in text and "_keras_history" not in text, path.name


def test_helpers_of_the_old_flat_module_are_still_reachable():
    # vggunet.losses was one module before issue 14; its public helpers stay importable from it.
    names = ["class_probabilities", "pixel_weights", "validate_ignore_index",
             "validate_num_classes"]
    assert all(callable(getattr(L, name)) for name in names)
    assert L.EPSILON == 1e-7 and L.effective_num_classes(1) == 2
    assert L.validate_class_weights(np.array([1, 2]), num_classes=1) == (1.0, 2.0)
    labels, valid = L.prepare_labels(np.array([[[0, 255]]]), 4, ignore_index=255)
    np.testing.assert_array_equal(ops.convert_to_numpy(labels), [[[0, 0]]])
    np.testing.assert_array_equal(ops.convert_to_numpy(valid), [[[1.0, 0.0]]])
