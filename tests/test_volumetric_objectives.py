"""Tests for the volume loss and metrics (vggunet.losses.volumetric, vggunet.metrics.volumetric).

The hand-computed case, one volume (B=1, H=2, W=1, D=2: voxels v0..v3) with two classes:

    g0 = [1, 1, 0, 0]        p0 = [0.9, 0.4, 0.2, 0.0]
    g1 = [0, 0, 0, 0]        p1 = [0.1, 0.0, 0.6, 0.0]   (class 1 is empty)

Soft Dice loss, ε = 1:
    class 0: Σpg = 1.3, Σp² = 0.81 + 0.16 + 0.04 = 1.01, Σg² = 2 -> 3.6 / (3.01 + 1) = 3.6 / 4.01
    class 1: Σpg = 0,   Σp² = 0.01 + 0.36 = 0.37,        Σg² = 0 -> 1 / 1.37
    loss = 1 - (3.6 / 4.01 + 1 / 1.37) / 2;  with ε = 0: 1 - (2.6 / 3.01 + 0) / 2
Thresholded at 0.5: p0 -> [1, 0, 0, 0], p1 -> [0, 0, 1, 0]:
    class 0: TP 1, FP 0, FN 1, TN 2: Dice (2 + 1) / (1 + 2 + 1) = 3/4, sens 1/2, spec 1
    class 1: TP 0, FP 1, FN 0, TN 3: Dice (0 + 1) / (1 + 0 + 1) = 1/2, sens 0/0, spec 3/4
    DiceCoefficient = 5/8
Soft (threshold=None) Dice: class 0 (2.6 + 1) / (1.5 + 2 + 1) = 0.8, class 1 1 / (0.7 + 1).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops

from vggunet import build_unet_3d
from vggunet import losses as L
from vggunet import metrics as M
from vggunet.errors import ArgumentError

G = np.stack([[1, 1, 0, 0], [0, 0, 0, 0]], axis=-1).reshape(1, 2, 1, 2, 2).astype("float32")
P = np.stack([[0.9, 0.4, 0.2, 0.0], [0.1, 0.0, 0.6, 0.0]], axis=-1).reshape(1, 2, 1, 2, 2)
P = P.astype("float32")
LOSS = 1 - (3.6 / 4.01 + 1 / 1.37) / 2
FORMATS = ("channels_last", "channels_first")
METRICS = (M.DiceCoefficient, M.PerClassDice, M.PerClassSensitivity, M.PerClassSpecificity)


def first(x: np.ndarray) -> np.ndarray:
    """The channels-last array in the channels-first layout."""
    return np.moveaxis(x, -1, 1)


def layout(x: np.ndarray, data_format: str) -> np.ndarray:
    return first(x) if data_format == "channels_first" else x


def value(x) -> np.ndarray:
    return ops.convert_to_numpy(x)


def measure(metric, *batches) -> np.ndarray:
    for batch in batches:
        metric.update_state(*batch)
    return value(metric.result())


def reference_soft_dice(g: np.ndarray, p: np.ndarray, eps: float) -> float:
    """The lab's formula in NumPy, channels last, any rank."""
    axes = tuple(range(g.ndim - 1))
    score = (2 * np.sum(g * p, axes) + eps) / (np.sum(g * g, axes) + np.sum(p * p, axes) + eps)
    return float(1 - np.mean(score))


@pytest.mark.parametrize("data_format", FORMATS)
def test_hand_computed_loss_and_metrics_in_both_layouts(data_format):
    g, p = layout(G, data_format), layout(P, data_format)
    assert float(value(L.SoftDiceLoss(data_format=data_format)(g, p))) == pytest.approx(LOSS)
    make = dict(num_classes=2, data_format=data_format)
    assert float(measure(M.DiceCoefficient(**make), (g, p))) == pytest.approx(5 / 8)
    np.testing.assert_allclose(measure(M.PerClassDice(**make), (g, p)), [3 / 4, 1 / 2])
    np.testing.assert_allclose(measure(M.PerClassSensitivity(**make), (g, p)), [1 / 2, 0])
    np.testing.assert_allclose(measure(M.PerClassSpecificity(**make), (g, p)), [1, 3 / 4])
    soft = M.PerClassDice(threshold=None, **make)
    np.testing.assert_allclose(measure(soft, (g, p)), [0.8, 1 / 1.7], rtol=1e-6)
    table = M.volume_scores(g, p, ["edema", "empty"], data_format)
    assert table["edema"] == pytest.approx({"dice": 3 / 4, "sensitivity": 1 / 2,
                                            "specificity": 1.0})
    assert table["empty"]["dice"] == pytest.approx(1 / 2)
    assert math.isnan(table["empty"]["sensitivity"])  # no positives: undefined, as in the lab
    assert table["empty"]["specificity"] == pytest.approx(3 / 4)


def test_epsilon_on_empty_classes():
    # ε = 0: the empty class with a false positive scores 0 (not NaN).
    loss = L.SoftDiceLoss(epsilon=0.0, data_format="channels_last")
    assert float(value(loss(G, P))) == pytest.approx(1 - (2.6 / 3.01) / 2)
    # Nothing anywhere: every class is perfectly predicted, for any ε, without NaN.
    zeros = np.zeros_like(G)
    for eps in (0.0, 1.0):
        assert float(value(L.SoftDiceLoss(eps, "channels_last")(zeros, zeros))) == 0.0
        dice = M.PerClassDice(2, epsilon=eps, data_format="channels_last")
        np.testing.assert_array_equal(measure(dice, (zeros, zeros)), [1.0, 1.0])
    # A tiny ε makes an empty class with a small false positive cost almost a full class.
    tiny = L.SoftDiceLoss(1e-5, "channels_last")
    only_empty = (G[..., 1:], P[..., 1:])
    assert float(value(tiny(*only_empty))) == pytest.approx(1 - 1e-5 / (0.37 + 1e-5))


@pytest.mark.parametrize("data_format", FORMATS)
def test_images_logits_and_sample_weights_match_numpy(data_format):
    rng = np.random.default_rng(0)
    g = (rng.uniform(size=(2, 5, 4, 3)) > 0.6).astype("float32")
    p = rng.uniform(0.01, 0.99, size=g.shape).astype("float32")
    expected = reference_soft_dice(g, p, 1.0)
    loss = L.SoftDiceLoss(data_format=data_format)
    assert float(value(loss(layout(g, data_format), layout(p, data_format)))) == pytest.approx(
        expected, rel=1e-5)
    logits = np.log(p / (1 - p))
    with_logits = L.SoftDiceLoss(data_format=data_format, from_logits=True)
    assert float(value(with_logits(layout(g, data_format), layout(logits, data_format)))) == (
        pytest.approx(expected, rel=1e-5))
    # A per-sample weight of 0 removes the second image from every sum.
    weighted = loss(layout(g, data_format), layout(p, data_format), sample_weight=[1.0, 0.0])
    assert float(value(weighted)) == pytest.approx(reference_soft_dice(g[:1], p[:1], 1.0),
                                                   rel=1e-5)


def test_metrics_accumulate_like_one_batch_and_agree_with_numpy_table():
    rng = np.random.default_rng(1)
    g = (rng.uniform(size=(3, 4, 4, 2, 3)) > 0.5).astype("float32")
    p = rng.uniform(size=g.shape).astype("float32")
    table = M.volume_scores(g, p, data_format="channels_last")
    for cls in METRICS:
        two = measure(cls(3, data_format="channels_last"), (g[:2], p[:2]), (g[2:], p[2:]))
        one = measure(cls(3, data_format="channels_last"), (g, p))
        np.testing.assert_allclose(two, one, rtol=1e-6)
    for key, cls in (("dice", M.PerClassDice), ("sensitivity", M.PerClassSensitivity),
                     ("specificity", M.PerClassSpecificity)):
        expected = [table[str(c)][key] for c in range(3)]
        np.testing.assert_allclose(measure(cls(3, data_format="channels_last"), (g, p)),
                                   expected, rtol=1e-6)
    # reset_state starts again from nothing.
    metric = M.PerClassSensitivity(3, data_format="channels_last")
    measure(metric, (g, p))
    metric.reset_state()
    np.testing.assert_array_equal(value(metric.result()), [0, 0, 0])


def test_bad_arguments_raise_argument_errors():
    with pytest.raises(ArgumentError, match="data_format"):
        L.SoftDiceLoss(data_format="channels_middle")
    with pytest.raises(ArgumentError, match="epsilon"):
        M.DiceCoefficient(2, epsilon=-1.0)
    with pytest.raises(ArgumentError, match="shape of y_pred"):
        L.SoftDiceLoss(data_format="channels_last")(G[..., :1], P)
    with pytest.raises(ArgumentError, match="5D"):
        L.SoftDiceLoss(data_format="channels_last")(G[0, 0], P[0, 0])
    with pytest.raises(ArgumentError, match="num_classes=3"):
        M.DiceCoefficient(3, data_format="channels_last").update_state(G, P)
    with pytest.raises(ArgumentError, match="class_names"):
        M.volume_scores(G, P, ["one"], "channels_last")


def test_configs_round_trip_and_default_format_is_resolved():
    objects = [L.SoftDiceLoss(0.5, "channels_first", from_logits=True)] + [
        cls(3, threshold=0.4, epsilon=0.0, data_format="channels_first") for cls in METRICS]
    for obj in objects:
        config = keras.saving.serialize_keras_object(obj)
        assert config["registered_name"] == f"vggunet>{type(obj).__name__}"
        copy = keras.saving.deserialize_keras_object(config)
        assert type(copy) is type(obj)
        assert copy.get_config() == obj.get_config()
    assert L.SoftDiceLoss().get_config()["data_format"] == keras.config.image_data_format()


def test_tiny_3d_model_compiles_trains_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 2, 8, 8, 4)).astype("float32")
    y = (rng.uniform(size=(2, 3, 8, 8, 4)) > 0.7).astype("float32")
    model = build_unet_3d((2, 8, 8, 4), depth=2, base_filters=2, n_classes=3,
                          data_format="channels_first")
    fmt = dict(data_format="channels_first")
    model.compile(optimizer="adam", loss=L.SoftDiceLoss(**fmt),
                  metrics=[cls(3, **fmt) for cls in METRICS])
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    path = tmp_path / "unet3d.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    assert isinstance(reloaded.loss, L.SoftDiceLoss)
    before = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    after = reloaded.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5)
    # Inside evaluate the metrics give the NumPy table's numbers.
    table = M.volume_scores(y, model.predict(x, verbose=0), data_format="channels_first")
    np.testing.assert_allclose(before["per_class_sensitivity"],
                               [table[str(c)]["sensitivity"] for c in range(3)], rtol=1e-5)
