"""predict_volume (sliding window over whole scans), blend windows and volume_labels."""

from __future__ import annotations

import functools
import itertools

import keras
import numpy as np
import pytest

from vggunet.errors import ArgumentError, PredictionError
from vggunet.inference.volume import (
    GAUSSIAN_FLOOR, blend_window, predict_volume, volume_labels, window_starts,
)
from vggunet.models.unet3d import build_unet_3d

FORMATS = ("channels_last", "channels_first")


@functools.lru_cache(maxsize=None)
def _unet(data_format: str, patch=(8, 8, 8), channels: int = 2, classes: int = 3):
    shape = (*patch, channels) if data_format == "channels_last" else (channels, *patch)
    keras.utils.set_random_seed(0)
    return build_unet_3d(shape, depth=2, base_filters=2, n_classes=classes,
                         data_format=data_format)


def _pointwise(channels: int = 2, classes: int = 3, shape=(None, None, None)):
    """A 1x1x1 softmax conv (translation- and flip-equivariant) and its NumPy reference."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((*shape, channels)),
                              keras.layers.Conv3D(classes, 1, activation="softmax")])
    kernel, bias = (np.asarray(v) for v in model.layers[0].get_weights())

    def reference(volume: np.ndarray) -> np.ndarray:
        logits = volume.astype(np.float64) @ kernel.reshape(channels, classes) + bias
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    return model, reference


def _single_pass(model, volume, data_format):
    x = volume[None] if data_format == "channels_last" else np.moveaxis(volume, -1, 0)[None]
    out = np.asarray(model.predict_on_batch(x.astype("float32")))[0]
    return out if data_format == "channels_last" else np.moveaxis(out, 0, -1)


class _Recorder:
    """Wraps a model and records the batch sizes it is called with."""

    def __init__(self, model):
        self.model, self.sizes = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict_on_batch(self, x):
        self.sizes.append(len(x))
        return self.model.predict_on_batch(x)


@pytest.mark.parametrize("data_format", FORMATS)
def test_output_shape_any_volume_size(data_format):
    model = _unet(data_format)
    rng = np.random.default_rng(0)
    for shape in [(5, 6, 7), (13, 17, 9), (16, 3, 11)]:
        probs = predict_volume(model, rng.normal(size=(*shape, 2)), standardize="none",
                               overlap=0.25, batch_size=4)
        assert probs.shape == (*shape, 3) and probs.dtype == np.float32
        assert np.all((probs >= 0) & (probs <= 1))


def test_whole_brats_sized_scan():
    model, reference = _pointwise(channels=2, shape=(120, 120, 78))
    volume = np.random.default_rng(0).random((240, 240, 155, 2), "float32")
    probs = predict_volume(model, volume, overlap=0.0, batch_size=2, standardize="none")
    assert probs.shape == (240, 240, 155, 3)
    np.testing.assert_allclose(probs[::7, ::7, ::7], reference(volume[::7, ::7, ::7]),
                               atol=1e-5)


@pytest.mark.parametrize("data_format", FORMATS)
def test_patch_of_volume_size_is_one_forward_pass(data_format):
    model = _unet(data_format)
    volume = np.random.default_rng(1).normal(size=(8, 8, 8, 2)).astype("float32")
    expected = _single_pass(model, 0.5 * volume, data_format)
    for blend in ("gaussian", "linear", "constant"):
        probs = predict_volume(model, volume, blend=blend, standardize=lambda x: 0.5 * x)
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_pointwise_model_sliding_window_equals_whole_volume():
    model, reference = _pointwise()
    volume = np.random.default_rng(2).normal(size=(11, 9, 7, 2)).astype("float32")
    for overlap, blend in itertools.product([0.0, 0.25, 0.5, 0.9, (1, 2, 3)],
                                            ["gaussian", "linear", "constant"]):
        probs = predict_volume(model, volume, patch=(4, 5, 6), overlap=overlap, blend=blend,
                               standardize="none", batch_size=3)
        np.testing.assert_allclose(probs, reference(volume), atol=1e-5)


def test_window_starts_end_at_the_border():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]
    assert window_starts(9, 4, 0) == [0, 4, 5]
    assert window_starts(4, 4, 3) == [0]
    assert window_starts(5, 8, 4) == [-1]  # pad 3: 1 before, 2 after
    for size, patch, overlap in itertools.product(range(1, 20), range(1, 9), range(0, 8)):
        if overlap >= patch:
            continue
        starts = window_starts(size, patch, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[max(s, 0):s + patch] = True
        assert covered.all() and (size <= patch or starts[-1] + patch == size)
        assert all(b - a <= patch - overlap for a, b in zip(starts, starts[1:]))


def test_blend_window_values():
    w = blend_window((9, 17, 25), "gaussian")
    assert w.shape == (9, 17, 25) and w.max() == w[4, 8, 12] == 1.0
    # sigma = patch / 8 per axis: one sigma from the centre the weight is exp(-1/2).
    np.testing.assert_allclose(w[4, 8 + 2, 12],
                               np.exp(-0.5 * (2 / (17 / 8)) ** 2), rtol=1e-6)
    np.testing.assert_allclose(w[4 + 1, 8, 12], np.exp(-0.5 * (1 / (9 / 8)) ** 2), rtol=1e-6)
    assert w.min() == pytest.approx(GAUSSIAN_FLOOR) and np.array_equal(w, w[::-1, ::-1, ::-1])
    lin = blend_window((6, 4, 1), "linear", (2, 1, 0))
    np.testing.assert_allclose(lin[:, 1, 0], [1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(lin[2, :, 0], [0.5, 1, 1, 0.5], rtol=1e-6)
    assert np.array_equal(blend_window((3, 4, 5), "constant"), np.ones((3, 4, 5), "float32"))


def test_batches_never_exceed_batch_size():
    model, _ = _pointwise()
    recorder = _Recorder(model)
    volume = np.zeros((10, 10, 10, 2), "float32")
    predict_volume(recorder, volume, patch=4, overlap=0.5, batch_size=3, standardize="none")
    windows = len(window_starts(10, 4, 2)) ** 3
    # Every call gets 3 patches (the last batch is zero-filled, so one shape is traced).
    assert recorder.sizes == [3] * -(-windows // 3)


@pytest.mark.parametrize("data_format", FORMATS)
def test_tta_averages_the_eight_flips(data_format):
    model = _unet(data_format)
    volume = np.random.default_rng(3).normal(size=(8, 8, 8, 2)).astype("float32")
    expected = np.mean([
        np.flip(_single_pass(model, np.flip(volume, axes), data_format), axes)
        for n in range(4) for axes in itertools.combinations((0, 1, 2), n)], axis=0)
    probs = predict_volume(model, volume, tta=True, standardize="none")
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    # A flip-symmetric case: a pointwise model gives the same result with and without TTA.
    pointwise, reference = _pointwise()
    recorder = _Recorder(pointwise)
    tta = predict_volume(recorder, volume, patch=8, tta=True, standardize="none")
    np.testing.assert_allclose(tta, reference(volume), atol=1e-5)
    assert recorder.sizes == [1] * 8


def test_from_logits_and_grey_volumes():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((None, None, None, 1)), keras.layers.Conv3D(2, 1)])
    volume = np.random.default_rng(4).normal(size=(4, 5, 6)).astype("float32")
    logits = _single_pass(model, volume[..., None], "channels_last")
    sigmoid = predict_volume(model, volume, patch=4, from_logits="sigmoid", standardize="none")
    softmax = predict_volume(model, volume, patch=4, from_logits=True, standardize="none")
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-logits)), rtol=1e-5)
    np.testing.assert_allclose(softmax.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(softmax[..., 1], 1 / (1 + np.exp(logits[..., 0] - logits[..., 1])),
                               rtol=1e-5)


def test_bad_arguments_name_the_value():
    model = _unet("channels_last")
    volume = np.zeros((8, 8, 8, 2), "float32")
    cases = [
        (dict(blend="cubic"), "cubic"), (dict(overlap=1.0), "1.0"), (dict(patch=(8, 8, 4)), "4"),
        (dict(batch_size=0), "batch_size"), (dict(overlap=(1, 2)), "(1, 2)"),
        (dict(from_logits="relu"), "relu"), (dict(overlap=(8, 0, 0)), "8"),
    ]
    for kwargs, text in cases:
        with pytest.raises(ArgumentError, match=text.replace("(", r"\(").replace(")", r"\)")):
            predict_volume(model, volume, standardize="none", **kwargs)
    with pytest.raises(PredictionError, match="3 channels"):
        predict_volume(model, np.zeros((8, 8, 8, 3)), standardize="none")
    volume[1, 2, 3, 0] = np.nan
    with pytest.raises(PredictionError, match="non-finite"):
        predict_volume(model, volume, standardize="none")
    free, _ = _pointwise()
    with pytest.raises(ArgumentError, match="patch"):
        predict_volume(free, np.zeros((4, 4, 4, 2)), standardize="none")


def test_volume_labels_modes():
    softmax = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]], "float32")
    assert volume_labels(softmax, "argmax").tolist() == [0, 2, 1]
    assert volume_labels(softmax).tolist() == [0, 2, 1]  # sums to 1: argmax
    sigmoid = np.array([[0.1, 0.2, 0.3], [0.9, 0.1, 0.6], [0.8, 0.7, 0.2], [0.6, 0.1, 0.2]],
                       "float32")
    assert volume_labels(sigmoid, "threshold").tolist() == [0, 3, 2, 1]
    assert volume_labels(sigmoid).tolist() == [0, 3, 2, 1]
    assert volume_labels(sigmoid, "threshold", threshold=0.65).tolist() == [0, 1, 2, 0]
    one = np.array([[0.4], [0.6]], "float32")
    assert volume_labels(one).tolist() == [0, 1]
    grid = np.random.default_rng(5).random((3, 4, 5, 3)).astype("float32")
    labels = volume_labels(grid, "threshold")
    assert labels.shape == (3, 4, 5) and labels.dtype == np.int32
    for index in np.ndindex(labels.shape):
        above = [k + 1 for k in range(3) if grid[index][k] > 0.5]
        assert labels[index] == (max(above) if above else 0)
    with pytest.raises(ArgumentError, match="'vote'"):
        volume_labels(grid, "vote")
