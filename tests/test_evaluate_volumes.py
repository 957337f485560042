"""evaluate_volumes / format_volume_scores (hand-computed scores) and plot_volume_slices."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from vggunet.errors import ArgumentError, DataError
from vggunet.volume_evaluation import evaluate_volumes, format_volume_scores
from vggunet.inference.volume import predict_volume
from vggunet.models.unet3d import build_unet_3d
from vggunet.plots_volume import plot_volume_slices

# Two 2x2x2 cases (voxels in C order). Case a: class 1 true {0, 1}, predicted {0, 7}; class 2
# true {2, 6}, predicted {2, 3}. Case b: class 1 true {0}, nothing predicted.
LABEL_A = np.array([1, 1, 2, 0, 0, 0, 2, 0]).reshape(2, 2, 2)
PRED_A = np.array([1, 0, 2, 2, 0, 0, 0, 1]).reshape(2, 2, 2)
LABEL_B = np.array([1, 0, 0, 0, 0, 0, 0, 0]).reshape(2, 2, 2)
PRED_B = np.zeros((2, 2, 2), int)


def _echo_model(classes: int, activation: str, first: int):
    """A 1x1x1 conv whose input is the one-hot prediction: outputs ~1 where it is set."""
    model = keras.Sequential([keras.Input((None, None, None, classes)),
                              keras.layers.Conv3D(classes, 1, activation=activation)])
    kernel = (20.0 * np.eye(classes)).reshape(1, 1, 1, classes, classes)
    model.layers[0].set_weights([kernel, np.full(classes, -10.0)])
    return model, lambda pred: np.stack([pred == k + first for k in range(classes)], -1)


def test_multilabel_scores_by_hand(tmp_path):
    model, encode = _echo_model(2, "sigmoid", first=1)
    cases = [("a", encode(PRED_A), LABEL_A), ("b", encode(PRED_B), LABEL_B)]
    result = evaluate_volumes(model, iter(cases), patch=2, standardize="none",
                              class_names=("edema", "tumour"), out_json=tmp_path / "s.json",
                              verbose=False)
    assert result["classes"] == ["edema", "tumour"] and result["label_mode"] == "multilabel"
    a, b = (c["scores"] for c in result["cases"])
    assert a["edema"] == pytest.approx({"dice": 0.5, "sensitivity": 0.5, "specificity": 5 / 6})
    assert a["tumour"] == pytest.approx({"dice": 0.5, "sensitivity": 0.5, "specificity": 5 / 6})
    assert b["edema"] == {"dice": 0.0, "sensitivity": 0.0, "specificity": 1.0}
    # Class absent from truth and prediction: Dice 1, sensitivity undefined.
    assert b["tumour"]["dice"] == 1.0 and math.isnan(b["tumour"]["sensitivity"])
    # The set: counts summed over both cases' 16 voxels, not the mean of the cases.
    overall = result["overall"]
    assert overall["edema"] == pytest.approx(
        {"dice": 2 / 5, "sensitivity": 1 / 3, "specificity": 12 / 13})
    assert overall["tumour"] == pytest.approx(
        {"dice": 0.5, "sensitivity": 0.5, "specificity": 13 / 14})
    assert result["mean"]["dice"] == pytest.approx(0.45)
    assert result["cases"][1]["mean"]["sensitivity"] == 0.0  # NaN skipped
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["cases"][1]["scores"]["tumour"]["sensitivity"] is None
    assert saved["overall"]["edema"]["dice"] == pytest.approx(0.4)
    assert [c["name"] for c in saved["cases"]] == ["a", "b"]
    assert saved["cases"][0]["shape"] == [2, 2, 2]
    text = format_volume_scores(saved)
    assert "overall   edema       0.4000       0.3333       0.9231" in text
    assert "b         tumour      1.0000          nan       1.0000" in text


def test_index_scores_by_hand():
    model, encode = _echo_model(3, "softmax", first=0)
    result = evaluate_volumes(model, [(encode(PRED_A), LABEL_A)], patch=2,
                              standardize="none", label_mode="index", verbose=False)
    assert result["classes"] == ["background", "1", "2"] and result["foreground"] == ["1", "2"]
    scores = result["cases"][0]["scores"]
    assert result["cases"][0]["name"] == "case_0"
    # Background: true {3, 4, 5, 7}, predicted {1, 4, 5, 6}: TP 2, TN 2 of 4 negatives.
    assert scores["background"] == pytest.approx(
        {"dice": 0.5, "sensitivity": 0.5, "specificity": 0.5})
    assert scores["1"] == pytest.approx({"dice": 0.5, "sensitivity": 0.5, "specificity": 5 / 6})
    assert result["mean"]["dice"] == pytest.approx(0.5)  # foreground classes only


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_unet_scores_match_a_numpy_reference(data_format):
    shape = (2, 8, 8, 4) if data_format == "channels_first" else (8, 8, 4, 2)
    keras.utils.set_random_seed(3)
    model = build_unet_3d(shape, depth=2, base_filters=2, n_classes=2, data_format=data_format)
    rng = np.random.default_rng(0)
    image, label = rng.normal(size=(10, 9, 6, 2)), rng.integers(0, 3, (10, 9, 6))
    result = evaluate_volumes(model, [("x", image, label)], standardize=lambda v: v - 1,
                              verbose=False)
    pred = predict_volume(model, image, standardize=lambda v: v - 1) > 0.5
    for k, name in enumerate(("1", "2")):
        g, p = label == k + 1, pred[..., k]
        tp, fp, fn = np.sum(g & p), np.sum(~g & p), np.sum(g & ~p)
        tn = g.size - tp - fp - fn
        assert result["overall"][name] == pytest.approx({
            "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp)})


def test_bad_cases_name_the_case():
    model, encode = _echo_model(2, "sigmoid", first=1)
    with pytest.raises(DataError, match="case bad: label value 3"):
        evaluate_volumes(model, [("bad", encode(PRED_A), LABEL_A + 1)], patch=2,
                         standardize="none", verbose=False)
    with pytest.raises(DataError, match=r"case_0: label shape \(2, 2\)"):
        evaluate_volumes(model, [(encode(PRED_A), LABEL_A[0])], patch=2, standardize="none",
                         verbose=False)
    with pytest.raises(ArgumentError, match="class_names has 1 names"):
        evaluate_volumes(model, [(encode(PRED_A), LABEL_A)], patch=2, standardize="none",
                         class_names=["x"], verbose=False)
    with pytest.raises(ArgumentError, match="'dense'"):
        evaluate_volumes(model, [], label_mode="dense")
    with pytest.raises(ArgumentError, match="empty"):
        evaluate_volumes(model, [], patch=2)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_volume_slices_png(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((20, 16, 12, 2))
    label = np.zeros((20, 16, 12), int)
    label[5:9, 4:8, 7:10] = 1
    label[6:8, 5:7, 8] = 2
    label[12:14, 4:8, 8] = 1  # z = 8 holds the most foreground
    prediction = np.roll(label, 1, axis=0)
    path = plot_volume_slices(image, label, prediction, tmp_path / "out" / "slices.png",
                              class_names=("bg", "edema", "tumour"), channel=1)
    width, height = _png_size(path.read_bytes())
    assert path.stat().st_size > 5000 and 300 < width < 3000 and 300 < height < 3000
    fig = plot_volume_slices(image, label, views=("axial",), class_names=("bg", "a", "b"))
    assert len(fig.axes) == 2
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert tuple(legend.get_patches()[0].get_facecolor()[:3]) == (0.89, 0.10, 0.11)  # not white
    # The default slice: the most foreground in the label.
    assert "z = 8" in fig.axes[0].get_title()


def test_plot_volume_slices_bad_arguments():
    image = np.zeros((4, 5, 6))
    with pytest.raises(ArgumentError, match="'top'"):
        plot_volume_slices(image, views=("axial", "top"))
    with pytest.raises(ArgumentError, match="index 6"):
        plot_volume_slices(image, index=6)
    with pytest.raises(ArgumentError, match="channel 1"):
        plot_volume_slices(image, channel=1)
    with pytest.raises(ArgumentError, match="label shape"):
        plot_volume_slices(image, np.zeros((4, 5, 5), int))
