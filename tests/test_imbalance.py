"""Imbalance-aware training pieces: Lovász-softmax and OHEM losses, class weightings, poly schedule.

Loss values are checked against hand computations and, for Lovász-softmax, against an
independent NumPy implementation of the reference algorithm (Berman et al. 2018) written here.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from _objective_cases import PROBS, Y
from vggunet import choices
from vggunet import losses as L
from vggunet.data.validate import class_weights
from vggunet.data.weightmaps import frequency_weights
from vggunet.training.schedules import PolyDecayEpochs, poly_lr


def value(x) -> float:
    return float(ops.convert_to_numpy(x))


# --------------------------------------------------------------------------- Lovász reference


def _lovasz_grad(fg_sorted: np.ndarray) -> np.ndarray:
    total = fg_sorted.sum()
    intersection = total - np.cumsum(fg_sorted)
    union = total + np.cumsum(1.0 - fg_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].copy()
    return jaccard


def _lovasz_flat(probs: np.ndarray, labels: np.ndarray) -> float:
    """Reference: (P, C) probabilities, (P,) labels, classes present only, mean over them."""
    terms = []
    for c in range(probs.shape[1]):
        fg = (labels == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        terms.append(float(errors[order] @ _lovasz_grad(fg[order])))
    return float(np.mean(terms)) if terms else 0.0


def lovasz_reference(labels, probs, per_image: bool, ignore: int | None = None) -> float:
    """Ignored pixels are cut out, as the reference implementation does."""
    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    groups = zip(labels, probs) if per_image else [(labels, probs)]
    values = []
    for lab, prob in groups:
        lab, prob = lab.reshape(-1), prob.reshape(-1, prob.shape[-1])
        keep = np.ones(lab.shape, bool) if ignore is None else lab != ignore
        values.append(_lovasz_flat(prob[keep], lab[keep]))
    return float(np.mean(values))


def _batch(seed: int, shape=(2, 3, 4), classes: int = 4):
    """Labels in 0..2 (class 3 absent), softmax probabilities."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes - 1, size=shape).astype("int32")
    logits = rng.normal(size=(*shape, classes)).astype("float32")
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return labels, logits, (e / e.sum(-1, keepdims=True)).astype("float32")


def test_lovasz_hand_value():
    # Labels [0, 0, 1], p(class 1) = [.1, .6, .7]. Class 0: errors sorted .6(fg) .3 .1(fg),
    # grad [1/2, 1/6, 1/3] -> 23/60; class 1: errors .6 .3(fg) .1, grad [1/2, 1/2, 0] -> 27/60.
    p1 = np.array([[0.1, 0.6, 0.7]], "float32")
    probs = np.stack([1 - p1, p1], -1)
    labels = np.array([[0, 0, 1]])
    assert value(L.LovaszSoftmaxLoss()(labels, probs)) == pytest.approx(25 / 60, rel=1e-6)
    assert lovasz_reference(labels, probs, False) == pytest.approx(25 / 60, rel=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_lovasz_matches_numpy_reference_with_an_absent_class(per_image, seed):
    labels, logits, probs = _batch(seed)
    expected = lovasz_reference(labels, probs, per_image)
    loss = L.LovaszSoftmaxLoss(per_image=per_image)
    assert value(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    logit_loss = L.LovaszSoftmaxLoss(per_image=per_image, from_logits=True)
    assert value(logit_loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_ignore_index_matches_the_reference_and_cutting_out(per_image):
    labels, _, probs = _batch(2)
    labels[0, 0, :3] = 255
    labels[1, 2, 1] = 255
    expected = lovasz_reference(labels, probs, per_image, ignore=255)
    loss = L.LovaszSoftmaxLoss(per_image=per_image, ignore_index=255)
    assert value(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    # Per batch, the result is that of the kept pixels alone, as one row.
    keep = labels != 255
    flat = L.LovaszSoftmaxLoss(per_image=False)(labels[keep][None], probs[keep][None])
    if not per_image:
        assert value(loss(labels, probs)) == pytest.approx(value(flat), rel=1e-5)


def test_lovasz_all_ignored_perfect_and_class_weights():
    labels, _, probs = _batch(3, shape=(1, 2, 3))
    assert value(L.LovaszSoftmaxLoss(ignore_index=1)(np.ones_like(labels), probs)) == 0.0
    onehot = np.eye(4, dtype="float32")[labels]
    assert value(L.LovaszSoftmaxLoss()(labels, onehot)) == pytest.approx(0.0, abs=1e-7)
    # Class weights weight the average over present classes: weight only class 0 -> its term.
    flat_l, flat_p = labels.reshape(-1), probs.reshape(-1, 4).astype(np.float64)
    fg = (flat_l == 0).astype(np.float64)
    errors = np.abs(fg - flat_p[:, 0])
    order = np.argsort(-errors, kind="stable")
    only0 = float(errors[order] @ _lovasz_grad(fg[order]))
    assert (flat_l == 0).any()
    weighted = L.LovaszSoftmaxLoss(class_weights=[1, 0, 0, 0])(labels, probs)
    assert value(weighted) == pytest.approx(only0, rel=1e-5)


# --------------------------------------------------------------------------- OHEM


# Y / PROBS: true-class probabilities 0.8, 0.6, 0.9, 0.3 (labels 0, 1, 1, 1).
@pytest.mark.parametrize("threshold, min_kept, kept", [
    (0.7, 0, (0.6, 0.3)),             # below the threshold only
    (0.7, 1, (0.6, 0.3)),             # the hardest one is below it anyway
    (0.7, 3, (0.8, 0.6, 0.3)),        # the 3 hardest: .3, .6, .8
    (0.7, 10, (0.8, 0.6, 0.9, 0.3)),  # more than there are: all
    (0.5, 0, (0.3,)),
    (1.0, 0, (0.8, 0.6, 0.9, 0.3)),
])
def test_ohem_hand_values(threshold, min_kept, kept):
    expected = -sum(math.log(p) for p in kept) / len(kept)
    loss = L.OhemCrossEntropyLoss(threshold=threshold, min_kept=min_kept)
    assert value(loss(Y, PROBS)) == pytest.approx(expected, rel=1e-6)


def test_ohem_ignore_index_class_weights_and_reductions():
    labels = np.array([[[0, 1], [1, 255]]])  # the 0.3 pixel is ignored
    loss = L.OhemCrossEntropyLoss(threshold=0.7, min_kept=2, ignore_index=255)
    # p < .7: {.6}; the 2 hardest valid pixels: .6, .8 (the ignored .3 never counts).
    expected = -(math.log(0.6) + math.log(0.8)) / 2
    assert value(loss(labels, PROBS)) == pytest.approx(expected, rel=1e-6)
    # Class weights [2, 1]: kept .8 (class 0, weight 2), .6, .3 -> mean over the 3 kept.
    weighted = L.OhemCrossEntropyLoss(threshold=0.85, min_kept=0, class_weights=[2, 1])
    expected = -(2 * math.log(0.8) + math.log(0.6) + math.log(0.3)) / 3
    assert value(weighted(Y, PROBS)) == pytest.approx(expected, rel=1e-6)
    per_pixel = L.OhemCrossEntropyLoss(threshold=0.7, min_kept=0, reduction="none")(Y, PROBS)
    np.testing.assert_allclose(ops.convert_to_numpy(per_pixel),
                               [[[0, -math.log(0.6)], [0, -math.log(0.3)]]], rtol=1e-6)
    all_ignored = L.OhemCrossEntropyLoss(ignore_index=1)(np.ones((1, 2, 2), "int32"), PROBS)
    assert value(all_ignored) == 0.0


def test_ohem_from_logits_on_a_random_batch_keeps_the_hard_pixels():
    labels, logits, probs = _batch(4)
    p_true = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
    kept = p_true[(p_true < 0.5) | (p_true <= np.sort(p_true.ravel())[9])]
    expected = -np.log(kept).mean()
    loss = L.OhemCrossEntropyLoss(threshold=0.5, min_kept=10, from_logits=True)
    assert value(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("build, message", [
    (lambda: L.OhemCrossEntropyLoss(threshold=0), "threshold"),
    (lambda: L.OhemCrossEntropyLoss(threshold=1.5), "threshold"),
    (lambda: L.OhemCrossEntropyLoss(min_kept=-1), "min_kept"),
    (lambda: L.LovaszSoftmaxLoss(per_image="yes"), "per_image"),
])
def test_bad_arguments_raise_argument_errors(build, message):
    from vggunet.errors import ArgumentError

    with pytest.raises(ArgumentError, match=message):
        build()


# --------------------------------------------------------------------------- factory, saving


def test_new_losses_by_name_and_in_the_cli_list():
    assert {"lovasz", "ohem"} <= set(choices.LOSS_NAMES)
    lovasz = L.get_loss("lovasz", num_classes=3, ignore_index=255, per_image=True)
    assert isinstance(lovasz, L.LovaszSoftmaxLoss) and lovasz.per_image
    assert lovasz.ignore_index == 255
    ohem = L.get_loss(" OHEM ", num_classes=3, threshold=0.6, min_kept=5, class_weights=[1, 2, 3])
    assert isinstance(ohem, L.OhemCrossEntropyLoss)
    assert (ohem.threshold, ohem.min_kept, ohem.class_weights) == (0.6, 5, (1.0, 2.0, 3.0))
    assert L.LovaszSoftmaxLoss().name == "lovasz_softmax_loss"
    assert L.OhemCrossEntropyLoss().name == "ohem_loss"
    with pytest.raises(TypeError, match="threshold"):
        L.get_loss("lovasz", threshold=0.5)


@pytest.mark.parametrize("loss", [
    L.LovaszSoftmaxLoss(per_image=True, ignore_index=255, class_weights=[1, 2, 1]),
    L.OhemCrossEntropyLoss(threshold=0.6, min_kept=7, ignore_index=255, class_weights=[1, 2, 1]),
])
def test_saved_model_round_trip_in_safe_mode(loss, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    outputs = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=loss)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    y = rng.integers(0, 3, size=(2, 4, 4)).astype("int32")
    y[0, 0, 0] = 255
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    before = model.evaluate(x, y, verbose=0)
    assert reloaded.evaluate(x, y, verbose=0) == pytest.approx(before, rel=1e-6)


# --------------------------------------------------------------------------- class weights


def test_inverse_sqrt_frequency_and_capped_weights_on_known_counts():
    # N = 1000 labelled pixels, K = 2 present: inverse frequency 1000 / (2 n_c).
    sqrt_w = frequency_weights([900, 100, 0], [1000, 1000, 0], "inverse_sqrt_frequency")
    np.testing.assert_allclose(sqrt_w, [math.sqrt(1000 / 1800), math.sqrt(5.0), 0.0], rtol=1e-6)
    # Median frequency: f = [.6, .3, .5], median .5 -> [5/6, 5/3, 1]; capped at 1.5.
    counts, image_pixels = [600, 300, 100], [1000, 1000, 200]
    np.testing.assert_allclose(frequency_weights(counts, image_pixels),
                               [5 / 6, 5 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(frequency_weights(counts, image_pixels, max_weight=1.5),
                               [5 / 6, 1.5, 1.0], rtol=1e-6)
    assert frequency_weights([0, 0], [0, 0], "inverse_sqrt_frequency").tolist() == [0.0, 0.0]
    from vggunet.errors import ArgumentError

    with pytest.raises(ArgumentError, match="max_weight"):
        frequency_weights(counts, image_pixels, max_weight=0)
    with pytest.raises(ArgumentError, match="Did you mean 'inverse_sqrt_frequency'"):
        frequency_weights(counts, image_pixels, "inverse_sqrt_frequencies")


def test_class_weights_from_masks_with_the_new_method_and_cap():
    # 24 labelled pixels: 18 of class 0, 6 of class 1, 2 ignored (255).
    mask = np.zeros((2, 13), np.int32)
    mask[0, :6] = 1
    mask[1, 11:] = 255
    np.testing.assert_allclose(
        class_weights(mask, 3, "inverse_sqrt_frequency", ignore_index=255),
        [math.sqrt(24 / 36), math.sqrt(2.0), 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        class_weights(mask, 3, "inverse_frequency", ignore_index=255, max_weight=1.5),
        [24 / 36, 1.5, 0.0], rtol=1e-6)
    assert "inverse_sqrt_frequency" in choices.SAMPLE_WEIGHTS


def test_cli_sample_weights_flag_reaches_the_pipeline(tmp_path):
    from vggunet.cli import build_parser, make_datasets

    masks = [np.zeros((4, 6), np.uint8), np.zeros((4, 6), np.uint8)]
    masks[0][:, :2] = 1  # class 1: 8 of 48 pixels; class 2: 4
    masks[1][0, :4] = 2
    for i, m in enumerate(masks):
        for folder, array in (("images", m * 50), ("masks", m)):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(array).save(tmp_path / folder / f"{i}.png")
    args = build_parser().parse_args([
        "train", "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
        "--num-classes", "3", "--batch-size", "2", "--out", str(tmp_path / "run"),
        "--sample-weights", "inverse_sqrt_frequency"])
    _, labels, weights = next(iter(make_datasets(args)[0]))
    cw = np.sqrt(48 / (3 * np.array([36.0, 8.0, 4.0])))
    np.testing.assert_allclose(weights.numpy(), cw[labels.numpy()], rtol=1e-6)


# --------------------------------------------------------------------------- poly schedule


def test_poly_lr_values_at_start_end_of_warmup_middle_and_end():
    kw = dict(power=0.9, warmup=4, end_lr=0.001, warmup_start=0.1)
    assert poly_lr(0, 24, 0.01, **kw) == pytest.approx(0.001)            # 0.1 * base
    assert poly_lr(2, 24, 0.01, **kw) == pytest.approx(0.0055)           # halfway up
    assert poly_lr(4, 24, 0.01, **kw) == pytest.approx(0.01)             # the peak
    assert poly_lr(14, 24, 0.01, **kw) == pytest.approx(0.001 + 0.009 * 0.5 ** 0.9)
    assert poly_lr(24, 24, 0.01, **kw) == pytest.approx(0.001)           # end_lr
    assert poly_lr(30, 24, 0.01, **kw) == pytest.approx(0.001)           # stays there
    # Defaults: power 0.9, no warm-up, decay to 0.
    assert poly_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert poly_lr(5, 10, 0.1) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert poly_lr(10, 10, 0.1) == 0.0


def test_poly_callback_sets_the_rate_per_global_epoch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    history = model.fit(x, y, epochs=5, initial_epoch=1, verbose=0,
                        callbacks=[PolyDecayEpochs(0.5, 1, 5, power=1.0, warmup=1)])
    # Epochs 1..4 of a schedule over [1, 5): warm-up epoch at 0.05, then 0.5, 1/3, 1/6 of 0.5.
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.05, 0.5, 0.5 * 2 / 3, 0.5 / 3], rtol=1e-6)
