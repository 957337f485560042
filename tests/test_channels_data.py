"""Image files with any number of channels: .npy arrays, RGBA/LA kept, the pipeline, the CLI.

One end-to-end `vggunet train/predict/evaluate --channels 4` run on ISBI tiles made 4-band (the
EM image three times + its gradient magnitude) with a VGG16 weights file the test writes; then
the decoding rules (in Python, no TensorFlow), masks and pairing, the tf.data pipeline and
prediction on 4- and 2-channel files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggunet.data.images import (
    check_channels, decode_image, load_image, read_image, read_npy,
)
from vggunet.data.masks import load_mask
from vggunet.data.pairs import find_pairs
from vggunet.data.validate import validate_pairs
from vggunet.errors import ArgumentError, DataError, PredictionError

from conftest import SHALLOW_FLAGS

ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def _npy(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def _png(path: Path, array, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path)
    return path


@pytest.fixture()
def pixels(rng) -> np.ndarray:
    return rng.integers(0, 256, (5, 6, 4)).astype(np.uint8)


# ------------------------------------------------------------------ end to end, real data
# First in the file: the longest test starts at once on one pytest-xdist worker.


def _four_band_tiles(root: Path) -> tuple[Path, Path]:
    """`root/images/N.npy` (EM image ×3 + gradient magnitude) and `root/label/N.png`."""
    from vggunet.demo import make_sample

    if not (ISBI / "image").is_dir():
        pytest.skip(f"ISBI data not found at {ISBI}")
    make_sample(ISBI, root, count=4, size=64)
    for png in sorted((root / "image").glob("*.png")):
        grey = np.asarray(Image.open(png), np.float32)
        gy, gx = np.gradient(grey)
        edges = np.hypot(gx, gy)
        edges = edges * (255.0 / max(float(edges.max()), 1.0))
        _npy(root / "images" / f"{png.stem}.npy",
             np.stack([grey, grey, grey, edges], -1).astype(np.float32))
    return root / "images", root / "label"


def test_cli_train_predict_evaluate_4_channel_npy_tiles(tmp_path, capsys):
    """In process (`vggunet.cli.app.main`): test_cli checks the commands as subprocesses."""
    import keras

    from vggunet.cli.app import main
    from vggunet.models.weights import tile_input_kernel
    from vggunet.saving import load_model

    images, labels = _four_band_tiles(tmp_path / "isbi4")
    keras.utils.set_random_seed(0)
    base = keras.applications.VGG16(include_top=False, weights=None)
    weights = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(weights)
    rgb_kernel = keras.ops.convert_to_numpy(base.get_layer("block1_conv1").kernel)
    del base

    # The encoder frozen (transfer learning's first phase) keeps the adapted first convolution
    # exactly as loaded. VGG16's first two blocks (test_cli's shallow U-Net) load from the whole
    # file and trace in a fraction of a deep encoder's time; test_channels covers the tiling for
    # ResNet50, EfficientNet and ConvNeXt too.
    run = tmp_path / "run"
    assert main(["train", "--images", str(images), "--masks", str(labels),
                 "--mask-format", "binary", "--channels", "4", "--backbone", "vgg16",
                 "--weights", str(weights), *SHALLOW_FLAGS, "--precision", "float32",
                 "--freeze", "encoder", "--epochs", "1", "--batch-size", "4",
                 "--seed", "0", "--no-tensorboard", "--out", str(run), "--quiet"]) == 0
    best = run / "checkpoints" / "best.keras"
    metrics = tmp_path / "metrics.json"
    assert main(["predict", "--model", str(best), "--input", str(images), "--out",
                 str(tmp_path / "pred"), "--channels", "4", "--quiet"]) == 0
    assert main(["evaluate", "--model", str(best), "--images", str(images), "--masks",
                 str(labels), "--mask-format", "binary", "--out", str(metrics), "--quiet"]) == 0
    model = load_model(best, compile=False)
    kernel = keras.ops.convert_to_numpy(model.get_layer("block1_conv1").kernel)
    assert kernel.shape == (3, 3, 4, 64) and model.input_shape[-1] == 4
    # The written RGB kernel tiled over 4 channels (x 3/4), untouched by the frozen epoch.
    np.testing.assert_allclose(kernel, tile_input_kernel(rgb_kernel, 4), rtol=1e-6)
    for stem in ("0", "1", "2", "3"):
        mask = Image.open(tmp_path / "pred" / f"{stem}.png")
        overlay = Image.open(tmp_path / "pred" / f"{stem}_overlay.png")
        assert mask.size == overlay.size == (64, 64) and overlay.mode == "RGB"
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1}
    scores = json.loads(metrics.read_text())
    assert scores["num_images"] == 4 and 0.0 <= scores["pixel_accuracy"] <= 1.0, scores
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ decoding rules


def test_npy_2d_and_3d_values_as_stored(tmp_path):
    grey = np.array([[0.5, 1000.0], [-3.0, 65535.0]], np.float64)
    path = _npy(tmp_path / "grey.npy", grey)
    assert decode_image(path).shape == (2, 2, 1)
    np.testing.assert_array_equal(load_image(path, 1)[..., 0], grey.astype(np.float32))
    np.testing.assert_array_equal(load_image(path, 3), np.repeat(grey[..., None], 3, -1))
    assert read_image(path, 3).shape == (2, 2)  # grey stays (H, W) for prediction
    assert read_image(path, 1).tolist() == grey.tolist()

    bands = np.arange(2 * 3 * 5, dtype=np.uint16).reshape(2, 3, 5) * 1000
    path5 = _npy(tmp_path / "five.npy", bands)
    for channels in (None, 5):
        out = decode_image(path5, channels)
        assert out.dtype == np.float32 and out.shape == (2, 3, 5)
        np.testing.assert_array_equal(out, bands)  # not scaled like a 16-bit PNG
    np.testing.assert_array_equal(read_image(path5, 5), bands)


def test_npy_rgb_converts_to_grey_like_an_rgb_png(tmp_path, rng):
    rgb = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
    from_png = load_image(_png(tmp_path / "a.png", rgb), 1)
    from_npy = load_image(_npy(tmp_path / "a.npy", rgb), 1)
    np.testing.assert_allclose(from_npy, from_png, atol=1e-4)
    np.testing.assert_array_equal(load_image(tmp_path / "a.npy", 3), rgb)


def test_rgba_keeps_alpha_for_4_channels_and_drops_it_for_3(tmp_path, pixels):
    path = _png(tmp_path / "rgba.png", pixels, "RGBA")
    np.testing.assert_array_equal(load_image(path, 4), pixels)
    np.testing.assert_array_equal(read_image(path, 4), pixels)
    np.testing.assert_array_equal(load_image(path, 3), pixels[..., :3])  # as before
    np.testing.assert_array_equal(decode_image(path), pixels[..., :3])
    assert load_image(path, 1).shape == (5, 6, 1)


def test_palette_with_transparency_gives_4_channels(tmp_path):
    img = Image.fromarray(np.array([[0, 1, 1], [1, 0, 1]], np.uint8), "P")
    img.putpalette([0, 0, 0, 255, 0, 0])
    img.save(tmp_path / "p.png", transparency=0)
    four = load_image(tmp_path / "p.png", 4)
    assert four[..., 3].tolist() == [[0, 255, 255], [255, 0, 255]]
    np.testing.assert_array_equal(four[..., :3], load_image(tmp_path / "p.png", 3))
    assert load_image(tmp_path / "p.png", 3)[0, 1].tolist() == [255, 0, 0]


def test_la_keeps_alpha_for_2_channels(tmp_path, pixels):
    path = _png(tmp_path / "la.png", pixels[..., :2], "LA")
    np.testing.assert_array_equal(load_image(path, 2), pixels[..., :2])
    np.testing.assert_array_equal(load_image(path, 1)[..., 0], pixels[..., 0])
    np.testing.assert_array_equal(load_image(path, 3), np.repeat(pixels[..., :1], 3, -1))


@pytest.mark.parametrize("name,make,channels,have", [
    ("rgb.png", lambda p, a: _png(p, a[..., :3]), 4, 3),
    ("grey.png", lambda p, a: _png(p, a[..., 0]), 2, 1),
    ("rgba.png", lambda p, a: _png(p, a, "RGBA"), 2, 4),
    ("four.npy", lambda p, a: _npy(p, a), 3, 4),
    ("four.npy", lambda p, a: _npy(p, a), 1, 4),
    ("two.npy", lambda p, a: _npy(p, a[..., :2]), 3, 2),
])
def test_other_channel_counts_are_never_converted(tmp_path, pixels, name, make, channels, have):
    path = make(tmp_path / name, pixels)
    expected = (f"image {path} has {have} channel(s), not the {channels} asked for "
                f"(channels={channels}); only grey (1) and RGB (3) are converted")
    with pytest.raises(DataError) as exc:
        load_image(path, channels)
    assert expected in str(exc.value)
    assert f"an (H, W, {channels}) .npy array" in str(exc.value)
    with pytest.raises(PredictionError, match="not the .* asked for"):
        read_image(path, channels)


@pytest.mark.parametrize("array,needle", [
    (np.array([1, "a", None], dtype=object), "is an object (pickled) array"),
    (np.array([[1.0, np.nan], [np.inf, 2.0]]),
     "has 2 NaN or infinite value(s) (as float32; the first at row 0, col 1, channel 0)"),
    (np.array([[1e300]]), "has 1 NaN or infinite value(s)"),  # overflows float32
    (np.zeros((2, 2, 2, 2)), "is an array of shape (2, 2, 2, 2); an array image must be"),
    (np.zeros((3,)), "is an array of shape (3,)"),
    (np.zeros((0, 4)), "is an array of shape (0, 4); an array image must be"),
    (np.zeros((2, 2), np.complex64), "holds complex64 values; an array image must hold real"),
    (np.array([["a"]]), "holds <U1 values"),
])
def test_bad_arrays_are_data_errors_naming_the_file(tmp_path, array, needle):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataError) as exc:
        load_image(path, 3)
    assert str(path) in str(exc.value) and needle in str(exc.value)


def test_npz_damaged_and_missing_npy_files(tmp_path):
    np.savez(tmp_path / "pair.npz", a=np.zeros(2))
    (tmp_path / "pair.npz").rename(tmp_path / "pair.npy")
    with pytest.raises(DataError, match=r"pair.npy is an .npz archive \(it does not start"):
        read_npy(tmp_path / "pair.npy")
    png = _png(tmp_path / "x.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"cannot read mask: .*png.npy is not a .npy file"):
        load_mask(png.rename(tmp_path / "png.npy"))
    path = _npy(tmp_path / "cut.npy", np.zeros((8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"cut.npy is not a readable .npy array"):
        load_image(path)
    with pytest.raises(PredictionError, match=r"cannot read image: .*none.npy does not exist"):
        read_image(tmp_path / "none.npy")


def test_check_channels_takes_any_positive_count():
    assert [check_channels(c) for c in (1, 2, 3, 4, 13, np.int64(6))] == [1, 2, 3, 4, 13, 6]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ArgumentError, match="channels must be a positive integer"):
            check_channels(bad)
    with pytest.raises(PredictionError, match="channels must be a positive integer, got 0"):
        read_image("x.png", 0)


# ------------------------------------------------------------------------ masks and pairing


def test_npy_masks_index_and_binary(tmp_path):
    classes = np.array([[0, 1], [2, 1]], np.int64)
    path = _npy(tmp_path / "m.npy", classes)
    assert load_mask(path, num_classes=3).tolist() == classes.tolist()
    assert load_mask(path).dtype == np.int32
    assert load_mask(_npy(tmp_path / "b.npy", np.minimum(classes, 1)[..., None] * 255),
                     "binary").tolist() == [[0, 1], [1, 1]]
    assert load_mask(_npy(tmp_path / "bool.npy", classes > 1)).tolist() == [[0, 0], [1, 0]]
    with pytest.raises(DataError, match=r"m.npy has value\(s\) 2 outside the valid class range"):
        load_mask(path, num_classes=2)
    with pytest.raises(DataError, match=r"m.npy is a .npy array of class indices; mask_format="
                                        r"'palette' needs colours"):
        load_mask(path, "palette", palette=[(0, 0, 0)])
    with pytest.raises(DataError, match=r"f.npy holds float32 values; class indices must be"):
        load_mask(_npy(tmp_path / "f.npy", classes.astype(np.float32)))
    with pytest.raises(DataError, match=r"c.npy is an array of shape \(2, 2, 3\)"):
        load_mask(_npy(tmp_path / "c.npy", np.zeros((2, 2, 3), np.uint8)))
    with pytest.raises(DataError, match="outside the int32 range"):
        load_mask(_npy(tmp_path / "big.npy", np.array([[0, 2 ** 40]])))


def test_pairing_and_validation_of_npy_images(tmp_path, pixels):
    for i in range(3):
        _npy(tmp_path / "images" / f"t{i}.npy", pixels)
        _png(tmp_path / "masks" / f"t{i}.png", np.zeros((5, 6)))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    assert [(a.name, b.name) for a, b in pairs] == [(f"t{i}.npy", f"t{i}.png") for i in range(3)]
    assert validate_pairs(pairs, 2, channels=4).image_channels == {4: 3}
    assert validate_pairs(pairs, 2).image_channels == {4: 3}
    with pytest.raises(DataError, match=r"t0.npy has 4 channel\(s\), not the 3 asked for"):
        validate_pairs(pairs, 2, channels=3)
    rgb = _png(tmp_path / "rgb.png", pixels[..., :3])
    with pytest.raises(DataError, match=r"rgb.png has 3 channel\(s\), not the 4 asked for"):
        validate_pairs([*pairs, (rgb, pairs[0][1])], 2, channels=4)
    rgba = _png(tmp_path / "rgba.png", pixels, "RGBA")
    info = validate_pairs([(rgba, pairs[0][1]), (rgb, pairs[0][1])], 2, channels=3)
    assert info.image_channels == {3: 2}  # alpha dropped for 3 channels, as before


# ------------------------------------------------------------------- pipeline and prediction


def test_pipeline_batches_of_4_channels(tmp_path, rng):
    from vggunet.data import make_dataset

    stack = rng.normal(100, 30, (3, 12, 10, 4)).astype(np.float32)
    for i, tile in enumerate(stack):
        _npy(tmp_path / "images" / f"{i}.npy", tile)
        _npy(tmp_path / "masks" / f"{i}.npy", (tile[..., 3] > 100).astype(np.uint8))
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2, channels=4,
                      batch_size=2, shuffle=False)
    (x0, y0), (x1, y1) = [(x.numpy(), y.numpy()) for x, y in ds]
    assert x0.shape == (2, 12, 10, 4) and x1.shape == (1, 12, 10, 4) and x0.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([x0, x1]), stack)  # values as stored
    np.testing.assert_array_equal(np.concatenate([y0, y1]), stack[..., 3] > 100)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2, channels=4,
                      batch_size=3, crop=(8, 8), pad_to=16, augment="flip,rot90,elastic",
                      scale="unit", seed=0, sample_weights="median_frequency")
    x, y, w = next(iter(ds))
    assert x.shape == (3, 16, 16, 4) and y.shape == (3, 16, 16) and w.shape == (3, 16, 16)
    with pytest.raises(DataError, match=r"0.npy has 4 channel\(s\), not the 3 asked for"):
        make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2, channels=3)


@pytest.fixture(scope="module")
def four_channel_model():
    import keras

    inputs = keras.Input((None, None, 4))
    outputs = keras.layers.Conv2D(2, 1, activation="softmax", name="head")(inputs)
    return keras.Model(inputs, outputs)


def test_predict_folder_of_4_and_2_channel_files(tmp_path, rng, four_channel_model):
    from vggunet.inference import predict_folder, predict_image_file

    stack = rng.integers(0, 256, (2, 20, 24, 4)).astype(np.float32)
    _npy(tmp_path / "in" / "a.npy", stack[0])
    _png(tmp_path / "in" / "b.png", stack[1], "RGBA")
    written = predict_folder(four_channel_model, tmp_path / "in", tmp_path / "out", channels=4,
                             verbose=False)
    assert [p.name for p in written] == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    expected = np.argmax(four_channel_model.predict(stack, verbose=0), -1)
    for i, stem in enumerate("ab"):
        mask = np.asarray(Image.open(tmp_path / "out" / f"{stem}.png"))
        np.testing.assert_array_equal(mask, expected[i])
        overlay = Image.open(tmp_path / "out" / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (24, 20)
    with pytest.raises(PredictionError) as exc:
        predict_folder(four_channel_model, tmp_path / "in", tmp_path / "out3", verbose=False)
    assert "a.npy has 4 channel(s), not the 3 asked for" in str(exc.value)
    # A 2-channel file read as 2 channels, for a model that expects 4: named, with the fix.
    two = _npy(tmp_path / "two.npy", stack[0, ..., :2])
    with pytest.raises(PredictionError) as exc:
        predict_image_file(four_channel_model, two, tmp_path / "o" / "two.png", channels=2)
    assert (f"{two} was read with 2 channels (channels=2) but the model expects 4; read it "
            "with channels=4 (CLI: --channels 4)") in str(exc.value)


def test_overlay_of_a_2_channel_image_shows_its_first_channel(tmp_path, rng):
    import keras

    from vggunet.inference import predict_image_file

    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    image = rng.integers(0, 256, (6, 7, 2)).astype(np.float32)
    path = _npy(tmp_path / "two.npy", image)
    predict_image_file(model, path, tmp_path / "m.png", tmp_path / "o.png", channels=2,
                       palette=[(0, 0, 0), (0, 0, 0)])
    overlay = np.asarray(Image.open(tmp_path / "o.png"))
    np.testing.assert_array_equal(overlay[..., 1], np.round(image[..., 0] * 0.5))


def test_plots_show_2_and_5_channel_images(tmp_path, rng):
    from vggunet.plots import display

    mask = rng.integers(0, 2, (6, 7))
    for channels in (2, 5):
        image = rng.integers(0, 256, (6, 7, channels)).astype(np.float32)
        display([image, mask], path=tmp_path / f"c{channels}.png", dpi=20)
        assert Image.open(tmp_path / f"c{channels}.png").size[0] > 0
