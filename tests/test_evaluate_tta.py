"""Evaluation as the field reports it: flip TTA, multi-scale inference, the confusion-matrix PNG,
overlays with a legend, class-name files and the CLI flags (`--tta`, `--scales`, `--confusion`,
`--class-names FILE`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

from vggunet.errors import ArgumentError, DataError, PredictionError  # noqa: E402


def _conv_model(kernel: int, classes: int, activation: str | None = "softmax",
                seed: int = 0) -> keras.Model:
    """A one-convolution model with fixed random weights (any input size)."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(classes, kernel, padding="same", activation=activation)
    model = keras.Model(inputs, conv(inputs))
    rng = np.random.default_rng(seed)
    conv.set_weights([rng.normal(size=w.shape).astype("float32") for w in conv.get_weights()])
    return model


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, size=(3, 12, 16, 3)).astype("float32")
    masks = rng.integers(0, 3, size=(3, 12, 16))
    return images, masks


def _cm(model, dataset, **options) -> np.ndarray:
    from vggunet.evaluate import evaluate

    return np.asarray(evaluate(model, dataset, verbose=False, **options)["confusion_matrix"])


def test_a_1x1_model_scores_the_same_with_flip_tta_and_repeated_scale(data):
    # A per-pixel model commutes with mirroring, so TTA averages two equal probabilities.
    model = _conv_model(1, 3)
    plain = _cm(model, data)
    assert plain.sum() == 3 * 12 * 16
    np.testing.assert_array_equal(_cm(model, data, tta=True), plain)
    np.testing.assert_array_equal(_cm(model, data, scales=(1.0, 1.0)), plain)
    np.testing.assert_array_equal(_cm(model, data, scales=(1.0,)), plain)


def test_a_1x1_sigmoid_logit_model_keeps_its_threshold_under_tta(data):
    images, masks = data
    model = _conv_model(1, 1, activation=None)  # logits: plain evaluate cuts at 0
    binary = (masks > 0).astype("int64")
    np.testing.assert_array_equal(_cm(model, (images, binary), tta=True),
                                  _cm(model, (images, binary)))


def test_a_1x1_model_on_constant_colour_images_is_scale_invariant():
    model = _conv_model(1, 3)
    colours = np.array([[10, 200, 30], [250, 5, 90], [0, 0, 0]], "float32") / 255
    images = np.broadcast_to(colours[:, None, None, :], (3, 20, 28, 3)).copy()
    masks = np.tile(np.arange(28) % 3, (3, 20, 1))
    plain = _cm(model, (images, masks))
    np.testing.assert_array_equal(_cm(model, (images, masks), scales=(0.5, 0.75, 1.25)), plain)
    np.testing.assert_array_equal(
        _cm(model, (images, masks), scales=(0.6, 1.7), tta=True), plain)


def test_flip_tta_is_the_mean_with_the_mirrored_prediction():
    from vggunet.inference.multiscale import predict_multiscale

    # 32 px and more: predict_proba reflect-pads smaller images, which a 3x3 kernel would see.
    images = np.random.default_rng(3).uniform(0, 1, size=(2, 32, 40, 3)).astype("float32")
    model = _conv_model(3, 3, seed=4)  # a 3x3 kernel is not mirror-symmetric
    direct = np.asarray(model(images))
    mirrored = np.asarray(model(images[:, :, ::-1].copy()))[:, :, ::-1]
    got = predict_multiscale(model, images, flip=True)
    np.testing.assert_allclose(got, (direct + mirrored) / 2, atol=1e-6)
    assert not np.allclose(direct, mirrored, atol=1e-3)  # the test does test something


def _round_trip_x2(images: np.ndarray) -> np.ndarray:
    """Bilinear (half-pixel centres) up by 2 then down by 2, by hand: on each axis pixel i
    becomes 0.125 x[i-1] + 0.75 x[i] + 0.125 x[i+1], the edge pixel repeated outside."""
    out = images
    for axis in (1, 2):
        padded = np.concatenate([np.take(out, [0], axis), out, np.take(out, [-1], axis)], axis)
        n = out.shape[axis]
        out = (0.125 * np.take(padded, range(0, n), axis)
               + 0.75 * np.take(padded, range(1, n + 1), axis)
               + 0.125 * np.take(padded, range(2, n + 2), axis))
    return out


def test_multiscale_averages_the_probabilities_resized_back(data):
    from vggunet.inference.multiscale import predict_multiscale

    images, _ = data
    # A linear per-pixel model commutes with bilinear resizing: its output at scale 2, resized
    # back, is its output on the image resized up and back down.
    model = _conv_model(1, 3, activation=None)
    expected = (np.asarray(model(images)) + np.asarray(model(_round_trip_x2(images)))) / 2
    got = predict_multiscale(model, images, scales=(1.0, 2.0))
    assert got.shape == (3, 12, 16, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("scales, fragment", [
    ((), "non-empty"), ("1,2", "'1,2'"), ((1.0, 0.0), "scales[1]"), ((-1,), "scales[0]"),
    ((float("nan"),), "scales[0]"), ((True,), "scales[0]"),
])
def test_bad_scales_name_the_value(scales, fragment, data):
    from vggunet.evaluate import evaluate

    with pytest.raises(ArgumentError, match=None) as error:
        evaluate(_conv_model(1, 3), data, scales=scales, verbose=False)
    assert fragment in str(error.value)


def test_confusion_png_is_row_normalised_at_the_figure_size(tmp_path):
    from vggunet.plots_confusion import confusion_figure_size, normalize_rows, plot_confusion_matrix

    cm = np.array([[6, 2, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(normalize_rows(cm), [[0.75, 0.25, 0], [0.5, 0.5, 0], [0, 0, 0]])
    path = plot_confusion_matrix(cm, tmp_path / "cm.png", ["bg", "cat", "dog"], dpi=50)
    assert Image.open(path).size == (250, 250)
    big = np.diag(np.arange(1, 60))
    path = plot_confusion_matrix(big, tmp_path / "cm59.png", [f"c{i}" for i in range(59)], dpi=40)
    side = round(confusion_figure_size(59) * 40)
    assert Image.open(path).size == (side, side) and side == 592
    with pytest.raises(ArgumentError, match="2 names for a 3×3"):
        plot_confusion_matrix(cm, tmp_path / "x.png", ["a", "b"])


def test_overlay_legend_lists_the_present_classes(tmp_path):
    from vggunet.inference.outputs import default_palette, overlay_image, save_overlay

    image = np.full((40, 30, 3), 200, "uint8")
    mask = np.zeros((40, 30), "int64")
    mask[:, 15:] = 2
    plain = overlay_image(image, mask)
    legend = overlay_image(image, mask, class_names=["bg", "cat", "dog"])
    assert legend.shape[0] == 40 and legend.shape[1] > 30
    np.testing.assert_array_equal(legend[:, :30], plain)
    panel = legend[:, 30:].reshape(-1, 3)
    colours = {tuple(c) for c in panel}
    assert tuple(default_palette(3)[2]) in colours  # class 2's swatch
    assert tuple(default_palette(3)[1]) not in colours  # class 1 is absent: no swatch
    tall = overlay_image(image[:8], mask[:8], class_names=["bg", "cat", "dog"])
    assert tall.shape[0] > 8  # the legend of two classes is taller than 8 rows
    path = save_overlay(image, mask, tmp_path / "o.png", class_names=["bg", "cat", "dog"])
    assert Image.open(path).size == (legend.shape[1], 40)
    with pytest.raises(PredictionError, match="class 2 but class_names has only 2"):
        overlay_image(image, mask, class_names=["bg", "cat"])


def test_class_names_file(tmp_path):
    from vggunet.cli.args import parse_class_names

    path = tmp_path / "classes.txt"
    path.write_text("# ccp\n0 null\n1 hair band\n\n2 skin\n", encoding="utf-8")
    assert parse_class_names(str(path)) == ["null", "hair band", "skin"]
    assert parse_class_names("a, b") == ["a", "b"]
    path.write_text("0 null\n2 skin\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: expected class index 1, got 2"):
        parse_class_names(str(path))


@pytest.mark.parametrize("value, fragment", [
    ("0.75,x", "'x'"), ("1,0", "--scales[1]"), ("-0.5", "--scales[0]"), ("", "''"),
])
def test_scales_flag_errors_name_the_value(value, fragment, capsys):
    from vggunet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--model", "m.keras", "--data", "d", "--scales", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--scales" in err and fragment in err, err


def test_cli_evaluate_with_tta_scales_and_confusion(tmp_path, capsys):
    import json

    from vggunet.cli import main
    from vggunet.evaluate import evaluate

    model = _conv_model(1, 3)
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(2)
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    images = rng.integers(0, 256, size=(2, 16, 20, 3)).astype("uint8")
    masks = rng.integers(0, 3, size=(2, 16, 20)).astype("uint8")
    for i in range(2):
        Image.fromarray(images[i]).save(tmp_path / "images" / f"a{i}.png")
        Image.fromarray(masks[i]).save(tmp_path / "masks" / f"a{i}.png")
    (tmp_path / "classes.txt").write_text("0 bg\n1 cat\n2 dog\n", encoding="utf-8")
    code = main(["evaluate", "--model", str(tmp_path / "m.keras"), "--images",
                 str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--tta",
                 "--scales", "1,1", "--confusion", str(tmp_path / "cm.png"), "--quiet",
                 "--class-names", str(tmp_path / "classes.txt"), "--out",
                 str(tmp_path / "m.json")])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["tta"] is True and result["scales"] == [1.0, 1.0]
    assert result["class_names"] == ["bg", "cat", "dog"]
    reference = evaluate(model, (images.astype("float32"), masks), verbose=False)
    assert result["confusion_matrix"] == reference["confusion_matrix"]
    assert Image.open(tmp_path / "cm.png").size == (500, 500)
    assert main(["evaluate", "--model", str(tmp_path / "m.keras"), "--images",
                 str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                 "--slices", str(tmp_path / "s.png")]) == 2
    assert "--slices of evaluate is for volume models" in capsys.readouterr().err
