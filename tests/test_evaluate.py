"""evaluate(): confusion-matrix scores against a hand-computed case, JSON output, outputs kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from vggunet.evaluate import evaluate, output_is_logits  # noqa: E402


def identity_model(channels, activation):
    inputs = keras.Input((4, 4, channels))
    outputs = keras.layers.Activation(activation, name="head_activation")(inputs)
    return keras.Model(inputs, outputs)


def one_hot_logits(labels, k):
    return (np.eye(k, dtype="float32")[labels] * 10.0).astype("float32")


TRUTH = np.array([[[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 2, 2],
                   [2, 2, 0, 0]]], dtype="int32")
PRED = np.array([[[0, 1, 1, 1],
                  [0, 0, 1, 2],
                  [2, 2, 2, 2],
                  [2, 0, 0, 0]]], dtype="int32")


def test_scores_match_hand_computed_confusion_matrix(tmp_path, capsys):
    # Hand count: truth 0 (6 px) -> pred 0: 5, pred 1: 1; truth 1 (4 px) -> 1: 3, 2: 1;
    # truth 2 (6 px) -> 2: 5, 0: 1.
    cm = np.array([[5, 1, 0], [0, 3, 1], [1, 0, 5]])
    model = identity_model(3, "softmax")
    out = tmp_path / "sub" / "scores.json"
    result = evaluate(model, (one_hot_logits(PRED, 3), TRUTH), class_names=["bg", "a", "b"],
                      out_json=out)
    assert result["confusion_matrix"] == cm.tolist()
    iou = [5 / (6 + 6 - 5), 3 / (4 + 4 - 3), 5 / (6 + 6 - 5)]
    dice = [2 * 5 / 12, 2 * 3 / 8, 2 * 5 / 12]
    np.testing.assert_allclose(result["per_class_iou"], iou)
    np.testing.assert_allclose(result["per_class_dice"], dice)
    assert result["mean_iou"] == pytest.approx(np.mean(iou))
    assert result["pixel_accuracy"] == pytest.approx(13 / 16)
    assert result["pixel_error"] == pytest.approx(3 / 16)
    assert result["true_pixels"] == [6, 4, 6] and result["class_names"] == ["bg", "a", "b"]
    assert result["num_images"] == 1
    assert json.loads(out.read_text())["confusion_matrix"] == cm.tolist()
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "pixel error" in printed and "bg" in printed


def test_ignore_index_and_weights(capsys):
    model = identity_model(3, "softmax")
    truth = TRUTH.copy()
    truth[0, 0, :] = 255  # ignore the first row
    r = evaluate(model, (one_hot_logits(PRED, 3), truth), ignore_index=255, verbose=False)
    assert r["num_pixels"] == 12
    weights = np.ones_like(TRUTH, dtype="float32")
    weights[0, 0, :] = 0
    w = evaluate(model, (one_hot_logits(PRED, 3), TRUTH, weights), verbose=False)
    assert w["confusion_matrix"] == r["confusion_matrix"]
    assert capsys.readouterr().out == ""


def test_single_sigmoid_channel_and_logits():
    truth = (TRUTH > 0).astype("int32")
    pred = (PRED > 0).astype("int32")
    logits = np.where(pred[..., None] == 1, 3.0, -3.0).astype("float32")
    sig = identity_model(1, "sigmoid")
    assert not output_is_logits(sig)
    r = evaluate(sig, (logits, truth), verbose=False)
    expected = np.zeros((2, 2), int)
    np.add.at(expected, (truth.ravel(), pred.ravel()), 1)
    assert r["confusion_matrix"] == expected.tolist()
    assert r["class_names"] == ["background", "foreground"] and r["num_classes"] == 2
    linear = identity_model(1, "linear")  # logits: thresholded at 0
    assert output_is_logits(linear)
    assert evaluate(linear, (logits, truth), verbose=False)["confusion_matrix"] == \
        expected.tolist()


def test_tf_dataset_batches():
    tf = pytest.importorskip("tensorflow")
    model = identity_model(3, "softmax")
    x = np.concatenate([one_hot_logits(PRED, 3)] * 3)
    y = np.concatenate([TRUTH] * 3)[..., None]  # (B, H, W, 1) masks are accepted
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    r = evaluate(model, ds, verbose=False)
    assert r["num_images"] == 3
    assert r["confusion_matrix"] == (3 * np.array([[5, 1, 0], [0, 3, 1], [1, 0, 5]])).tolist()


def test_bad_class_names():
    with pytest.raises(ValueError, match="class_names"):
        evaluate(identity_model(3, "softmax"), (one_hot_logits(PRED, 3), TRUTH),
                 class_names=["a"], verbose=False)


def test_progress_bar_per_batch_and_quiet(capsys):
    model = identity_model(3, "softmax")
    x = np.concatenate([one_hot_logits(PRED, 3)] * 17)  # 17 images: 3 batches of 8
    y = np.concatenate([TRUTH] * 17)
    capsys.readouterr()
    r = evaluate(model, (x, y))
    shown = capsys.readouterr().out
    assert r["num_images"] == 17
    assert "3/3" in shown and "mean IoU" in shown
    evaluate(model, (x, y), verbose=False)
    assert capsys.readouterr().out == ""
    # --quiet in the CLI: no bar, but the table through `say`.
    lines = []
    evaluate(model, (x, y), verbose=False, say=lines.append)
    assert capsys.readouterr().out == "" and "mean IoU" in lines[0]


def test_progress_bar_total_from_dataset_cardinality(capsys):
    tf = pytest.importorskip("tensorflow")
    model = identity_model(3, "softmax")
    x = np.concatenate([one_hot_logits(PRED, 3)] * 5)
    ds = tf.data.Dataset.from_tensor_slices((x, np.concatenate([TRUTH] * 5))).batch(2)
    capsys.readouterr()
    evaluate(model, ds)
    assert "3/3" in capsys.readouterr().out
    evaluate(model, ds.filter(lambda a, b: True))  # unknown cardinality: no bar, no guess
    shown = capsys.readouterr().out
    assert "mean IoU" in shown and "/3" not in shown


def test_predict_labels_is_scores_to_labels_for_any_backend_tensor():
    from vggunet.evaluate import predict_labels
    from vggunet.inference.labels import scores_to_labels

    scores = keras.ops.convert_to_tensor(one_hot_logits(PRED, 3))
    labels = predict_labels(scores)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, PRED)
    one = keras.ops.convert_to_tensor(np.array([[[[-1.0], [0.5]]]], "float32"))
    np.testing.assert_array_equal(predict_labels(one, from_logits=True), [[[0, 1]]])
    np.testing.assert_array_equal(predict_labels(one), scores_to_labels(np.asarray(one)))


def test_write_json_atomic_is_still_importable_here(tmp_path):
    from vggunet import fileio
    from vggunet.evaluate import write_json_atomic

    assert write_json_atomic is fileio.write_json_atomic
    path = write_json_atomic({"a": 1}, tmp_path / "x" / "s.json")
    assert json.loads(path.read_text()) == {"a": 1}
