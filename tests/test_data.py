"""Tests for vggunet.data: pairing, layouts, mask encodings, validation and pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggunet.data import weightmaps as DP
from vggunet.data import (
    DataError,
    border_weight_map,
    class_weights,
    discover_layout,
    find_pairs,
    load_image,
    load_mask,
    load_split,
    make_dataset,
    validate_pairs,
)

ISBI = Path(__file__).resolve().parents[1].parent / "shared/data/isbi2012"
needs_isbi = pytest.mark.skipif(not (ISBI / "image").is_dir(),
                                reason=f"ISBI 2012 data not found at {ISBI}")


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr), mode=mode).save(path) if mode else \
        Image.fromarray(np.asarray(arr)).save(path)
    return path


def _mask(h: int = 12, w: int = 16, k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, (h, w)).astype(np.uint8)


def _write_set(root: Path, n: int = 3, h: int = 12, w: int = 16, k: int = 3,
               img_dir: str = "images", mask_dir: str = "masks", suffix: str = "",
               factor: int = 40) -> list[np.ndarray]:
    """Images equal to mask * factor, so alignment is checkable after any transform."""
    masks = []
    for i in range(n):
        m = _mask(h, w, k, seed=i)
        _save(root / img_dir / f"{i}.png", m * factor)
        _save(root / mask_dir / f"{i}{suffix}.png", m)
        masks.append(m)
    return masks


# --------------------------------------------------------------------------- encodings


def test_index_mask_grey_and_rgb_grey(tmp_path):
    m = _mask()
    _save(tmp_path / "a.png", m)
    _save(tmp_path / "b.png", np.repeat(m[..., None], 3, -1))
    for name in ("a.png", "b.png"):
        out = load_mask(tmp_path / name, "index", num_classes=3)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, m)


def test_index_mask_rejects_colour_rgb(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    p = _save(tmp_path / "colour.png", rgb)
    with pytest.raises(DataError, match="colour.png") as exc:
        load_mask(p, "index")
    assert "palette" in str(exc.value) and "row 1, col 2" in str(exc.value)


def test_binary_masks(tmp_path):
    m = _mask(k=2)
    _save(tmp_path / "b255.png", m * 255)
    _save(tmp_path / "b01.png", m)
    jpeg_like = np.where(m == 1, 250, 3).astype(np.uint8)
    _save(tmp_path / "noisy.png", jpeg_like)
    for name in ("b255.png", "b01.png", "noisy.png"):
        np.testing.assert_array_equal(load_mask(tmp_path / name, "binary", num_classes=2), m)


def test_palette_mask_dict_and_list(tmp_path):
    colours = [(0, 0, 0), (128, 0, 0), (0, 128, 64)]
    m = _mask()
    p = _save(tmp_path / "pal.png", np.asarray(colours, np.uint8)[m])
    by_list = load_mask(p, "palette", palette=colours, num_classes=3)
    by_dict = load_mask(p, "palette", palette={2: (0, 128, 64), 0: (0, 0, 0),
                                               1: (128, 0, 0)}, num_classes=3)
    np.testing.assert_array_equal(by_list, m)
    np.testing.assert_array_equal(by_dict, m)
    # RGBA palette masks: alpha is ignored.
    rgba = np.concatenate([np.asarray(colours, np.uint8)[m],
                           np.full(m.shape + (1,), 255, np.uint8)], -1)
    p2 = _save(tmp_path / "pal_rgba.png", rgba)
    np.testing.assert_array_equal(load_mask(p2, "palette", palette=colours), m)


def test_palette_unknown_colour_error(tmp_path):
    colours = [(0, 0, 0), (255, 255, 255)]
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[2, 5] = (9, 99, 199)
    p = _save(tmp_path / "odd_colour.png", rgb)
    with pytest.raises(DataError) as exc:
        load_mask(p, "palette", palette=colours)
    msg = str(exc.value)
    assert "odd_colour.png" in msg and "(9, 99, 199)" in msg and "row 2, col 5" in msg


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_channel_mask_red(tmp_path, mode):
    m = _mask(k=13)  # CARLA-style: class index in the red channel
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, m.shape + (len(mode),)).astype(np.uint8)
    arr[..., 0] = m
    p = _save(tmp_path / f"carla_{mode}.png", arr)
    np.testing.assert_array_equal(load_mask(p, "channel", mask_channel=0, num_classes=13), m)
    with pytest.raises(DataError, match=f"carla_{mode}.png.*mask_channel=7"):
        load_mask(p, "channel", mask_channel=7)


def test_p_mode_png_gives_palette_indices(tmp_path):
    m = _mask(k=4)
    img = Image.fromarray(m, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    img.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png", "index", num_classes=4), m)


def test_16bit_mask_is_index_and_16bit_image_scaled(tmp_path):
    m = _mask(k=3).astype(np.uint16) * 300  # values beyond 8 bits stay intact
    Image.fromarray(m).save(tmp_path / "m16.png")  # uint16 -> 16-bit PNG
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    out = load_mask(tmp_path / "m16.png", "index")
    np.testing.assert_array_equal(out, m)
    img16 = np.array([[0, 257, 65535]], np.uint16)
    Image.fromarray(img16).save(tmp_path / "i16.png")
    got = load_image(tmp_path / "i16.png", channels=1)[..., 0]
    np.testing.assert_allclose(got, [[0.0, 1.0, 255.0]])


def test_load_image_channel_conversions(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 100, 50, 200, 7
    p = _save(tmp_path / "rgba.png", rgba)
    three = load_image(p, 3)
    assert three.shape == (2, 3, 3) and three.dtype == np.float32
    np.testing.assert_array_equal(three[0, 0], [100, 50, 200])
    grey = load_image(p, 1)
    np.testing.assert_allclose(grey[0, 0, 0], 0.299 * 100 + 0.587 * 50 + 0.114 * 200,
                               rtol=1e-5)
    g = _save(tmp_path / "grey.png", np.full((2, 2), 77, np.uint8))
    np.testing.assert_array_equal(load_image(g, 3), np.full((2, 2, 3), 77.0))


# --------------------------------------------------------------------------- pairing


def test_find_pairs_natural_order_and_extensions(tmp_path):
    for i in (10, 2, 1):
        _save(tmp_path / "im" / f"{i}.PNG", _mask())
        _save(tmp_path / "lb" / f"{i}.png", _mask())
    (tmp_path / "im" / "notes.txt").write_text("ignored")
    pairs = find_pairs(tmp_path / "im", tmp_path / "lb")
    assert [p[0].stem for p in pairs] == ["1", "2", "10"]
    assert all(a.stem == b.stem for a, b in pairs)


@pytest.mark.parametrize("suffix", ["_mask", "_L", "_label"])
def test_find_pairs_detects_mask_suffix(tmp_path, suffix):
    _write_set(tmp_path, suffix=suffix)
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    assert [(a.name, b.name) for a, b in pairs] == [
        (f"{i}.png", f"{i}{suffix}.png") for i in range(3)]
    assert len(find_pairs(tmp_path / "images", tmp_path / "masks", mask_suffix=suffix)) == 3


def test_two_folder_layouts(tmp_path):
    masks = _write_set(tmp_path / "a", img_dir="image", mask_dir="label")
    layout = discover_layout(tmp_path / "a")
    assert layout.kind == "folders"
    pairs = load_split(tmp_path / "a")
    assert len(pairs) == 3
    np.testing.assert_array_equal(load_mask(pairs[1][1], num_classes=3), masks[1])
    _write_set(tmp_path / "b", img_dir="images", mask_dir="labels")
    assert discover_layout(tmp_path / "b").splits["all"][1].name == "labels"


def test_camvid_layout(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        _write_set(tmp_path, n=n, img_dir=split, mask_dir=f"{split}annot", k=12)
    layout = discover_layout(tmp_path)
    assert layout.kind == "camvid" and set(layout.splits) == {"train", "val", "test"}
    assert len(load_split(tmp_path, "train")) == 3
    val = load_split(tmp_path, "val")
    assert [p[1].parent.name for p in val] == ["valannot", "valannot"]
    np.testing.assert_array_equal(load_mask(val[1][1], num_classes=12), _mask(k=12, seed=1))
    with pytest.raises(DataError, match="available: train, val, test"):
        load_split(tmp_path, "holdout")


def test_unknown_layout_lists_what_was_found(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataError) as exc:
        discover_layout(tmp_path)
    assert str(tmp_path) in str(exc.value)
    assert "pictures/" in str(exc.value) and "readme.md" in str(exc.value)


# --------------------------------------------------------------------------- errors


def test_error_missing_and_empty_folder(tmp_path):
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="nope.*does not exist"):
        find_pairs(tmp_path / "nope", tmp_path / "masks")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.txt").write_text("x")
    with pytest.raises(DataError) as exc:
        find_pairs(tmp_path / "images", tmp_path / "masks")
    assert str(tmp_path / "images") in str(exc.value) and "no image files" in str(exc.value)


def test_error_unpaired_both_ways(tmp_path):
    _write_set(tmp_path, n=3)
    _save(tmp_path / "images" / "orphan_img.png", _mask())
    _save(tmp_path / "masks" / "orphan_mask.png", _mask())
    with pytest.raises(DataError) as exc:
        find_pairs(tmp_path / "images", tmp_path / "masks")
    msg = str(exc.value)
    assert "1 image(s)" in msg and "orphan_img.png" in msg
    assert "1 mask(s)" in msg and "orphan_mask.png" in msg


def test_error_unpaired_list_is_capped(tmp_path):
    _write_set(tmp_path, n=1)
    for i in range(15):
        _save(tmp_path / "images" / f"extra{i}.png", _mask(2, 2))
    with pytest.raises(DataError, match=r"15 image\(s\).*and 5 more"):
        find_pairs(tmp_path / "images", tmp_path / "masks")


def test_error_value_out_of_range(tmp_path):
    _write_set(tmp_path, n=2, k=3)
    bad = _mask(k=3)
    bad[3, 4] = 7
    _save(tmp_path / "masks" / "1.png", bad)
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(DataError) as exc:
        validate_pairs(pairs, num_classes=3)
    msg = str(exc.value)
    assert "1.png" in msg and "7" in msg and "0..2" in msg and "row 3, col 4" in msg
    # ignore_index values are allowed, other values still are not.
    bad[3, 4] = 255
    _save(tmp_path / "masks" / "1.png", bad)
    validate_pairs(pairs, num_classes=3, ignore_index=255)
    with pytest.raises(DataError, match="mask_format='binary'"):
        validate_pairs([(pairs[0][0], _save(tmp_path / "b.png", _mask(k=2) * 255))], 2)


def test_error_size_mismatch(tmp_path):
    _write_set(tmp_path, n=2, h=12, w=16)
    _save(tmp_path / "masks" / "1.png", _mask(10, 16))
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(DataError) as exc:
        validate_pairs(pairs, 3)
    msg = str(exc.value)
    assert str(tmp_path / "images" / "1.png") in msg and "12x16" in msg and "10x16" in msg


def test_error_truncated_png(tmp_path):
    _write_set(tmp_path, n=2, h=64, w=64)
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    p = _save(tmp_path / "images" / "1.png", noisy)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(DataError, match=r"1\.png.*truncated or corrupt"):
        validate_pairs(pairs, 3)
    with pytest.raises(DataError, match="truncated"):
        load_image(p)


def test_error_text_file_named_png(tmp_path):
    _write_set(tmp_path, n=2)
    (tmp_path / "masks" / "0.png").write_text("this is not an image\n")
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(DataError, match=r"masks/0\.png is not a readable image"):
        validate_pairs(pairs, 3)
    with pytest.raises(DataError, match="not a readable image"):
        make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3)


def test_error_mixed_sizes_need_size_or_crop(tmp_path):
    _write_set(tmp_path, n=1, h=12, w=16)
    m = _mask(8, 8)
    _save(tmp_path / "images" / "9.png", m)
    _save(tmp_path / "masks" / "9.png", m)
    with pytest.raises(DataError, match="different sizes.*size= or crop="):
        make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3, batch_size=2)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3, batch_size=2,
                      size=(8, 8), shuffle=False)
    images, masks = next(iter(ds))
    assert images.shape == (2, 8, 8, 3) and masks.shape == (2, 8, 8)


# --------------------------------------------------------------------------- one image reader


def _colour_types(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """One file per colour type, with the RGB pixels (float32, 0..255) both readers must give."""
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (5, 7)).astype(np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    alpha = rng.integers(0, 256, (5, 7, 1)).astype(np.uint8)
    grey16 = rng.integers(0, 65536, (5, 7)).astype(np.uint16)
    colours = np.asarray([(0, 0, 0), (250, 10, 5), (3, 200, 90), (40, 50, 255)], np.uint8)
    index = rng.integers(0, 4, (5, 7)).astype(np.uint8)
    files = {}

    def write(name, image, expected_rgb=None):
        path = root / name
        image.save(path)
        if expected_rgb is None:  # lossy: what PIL itself decodes
            expected_rgb = np.asarray(Image.open(path).convert("RGB"))
        files[name] = (path, np.broadcast_to(np.asarray(expected_rgb, np.float32)
                                             .reshape(5, 7, -1), (5, 7, 3)))

    write("L.png", Image.fromarray(grey), grey)
    write("1.png", Image.fromarray(grey > 127), np.where(grey > 127, 255, 0))
    write("LA.png", Image.fromarray(np.dstack([grey, alpha]), "LA"), grey)
    write("RGB.png", Image.fromarray(rgb), rgb)
    write("RGBA.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb)
    palette_image = Image.fromarray(index, "P")
    palette_image.putpalette(colours.ravel().tolist() + [0] * (768 - colours.size))
    write("P.png", palette_image, colours[index])
    write("I16.png", Image.fromarray(grey16), grey16 / 257.0)
    write("I32.tif", Image.fromarray(grey16.astype(np.int32)), grey16 / 257.0)
    write("CMYK.tif", Image.fromarray(rgb).convert("CMYK"),
          np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB")))
    write("RGB.jpg", Image.fromarray(rgb))
    return files


def test_both_readers_give_the_same_pixels_for_every_colour_type(tmp_path):
    from vggunet.data.images import IMAGE_EXTENSIONS
    from vggunet.predict import IMAGE_SUFFIXES, read_image

    assert IMAGE_SUFFIXES is IMAGE_EXTENSIONS
    files = _colour_types(tmp_path)
    modes = {Image.open(path).mode for path, _ in files.values()}
    assert {"L", "1", "LA", "RGB", "RGBA", "P", "I;16", "I", "CMYK"} <= modes
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    for name, (path, expected) in files.items():
        rgb = load_image(path, 3)
        np.testing.assert_allclose(rgb, expected, rtol=1e-6, err_msg=name)
        grey = load_image(path, 1)
        np.testing.assert_allclose(grey[..., 0], expected @ luma, rtol=1e-5, atol=1e-4,
                                   err_msg=name)
        predicted = read_image(path, 3)
        is_grey = Image.open(path).mode in ("L", "1", "LA", "I;16", "I")
        assert predicted.shape == ((5, 7) if is_grey else (5, 7, 3)), name
        np.testing.assert_array_equal(np.broadcast_to(
            predicted[..., None] if is_grey else predicted, (5, 7, 3)), rgb, err_msg=name)
        np.testing.assert_array_equal(read_image(path, 1), grey[..., 0], err_msg=name)


def _corrupt_files(root: Path) -> dict[str, tuple[Path, str]]:
    good = _save(root / "good.png", np.random.default_rng(0).integers(0, 255, (64, 64),
                                                                        dtype=np.uint8))
    truncated = root / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    text = root / "text.png"
    text.write_text("not an image\n")
    return {"truncated": (truncated, "is truncated or corrupt"),
            "text": (text, "is not a readable image"),
            "missing": (root / "missing.png", "does not exist")}


def test_both_readers_refuse_the_same_corrupt_files_with_their_own_error(tmp_path):
    from vggunet.errors import PredictionError
    from vggunet.predict import read_image

    for name, (path, needle) in _corrupt_files(tmp_path).items():
        with pytest.raises(DataError) as data_error:
            load_image(path)
        with pytest.raises(PredictionError) as predict_error:
            read_image(path)
        assert not isinstance(data_error.value, PredictionError), name
        assert not isinstance(predict_error.value, DataError), name
        for exc in (data_error.value, predict_error.value):
            assert f"cannot read image: {path} {needle}" in str(exc), name
        with pytest.raises(DataError, match=f"cannot read mask: .*{name}.png {needle}"):
            load_mask(path)


def test_both_readers_refuse_decompression_bombs(tmp_path, monkeypatch):
    from vggunet.errors import PredictionError
    from vggunet.predict import read_image

    path = _save(tmp_path / "big.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 px > 2 x 100: refused
    with pytest.raises(DataError, match="big.png declares more pixels than PIL allows"):
        load_image(path)
    with pytest.raises(PredictionError, match="big.png declares more pixels than PIL allows"):
        read_image(path)


def test_float_images_are_refused_for_training_and_kept_for_prediction(tmp_path):
    from vggunet.predict import read_image

    values = np.array([[0.5, -1.0, 300.25]], np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, "F").save(path)
    with pytest.raises(DataError, match="float.tif is a 32-bit float image"):
        load_image(path)
    np.testing.assert_array_equal(read_image(path), values)


def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path):
    from vggunet.predict import read_image

    upright = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # 4 rows, 6 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the file stores it 6 x 4
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    stored.save(tmp_path / "photo.png", exif=exif)
    assert Image.open(tmp_path / "photo.png").size == (4, 6)
    np.testing.assert_array_equal(load_image(tmp_path / "photo.png"), upright)
    np.testing.assert_array_equal(read_image(tmp_path / "photo.png"), upright)
    labels = (upright[..., 0] % 3).astype(np.uint8)
    mask = Image.fromarray(labels, "P").transpose(Image.Transpose.ROTATE_90)
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    mask.save(tmp_path / "mask.png", exif=exif)
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.png", num_classes=3), labels)
    # A mask saved without the rotation no longer fits the upright image: the message says why.
    _save(tmp_path / "raw_mask.png", np.asarray(mask))
    with pytest.raises(DataError, match="is 4x6 .*raw_mask.png is 6x4; the sizes are swapped: "
                                        "vggunet applies an image's EXIF orientation"):
        validate_pairs([(tmp_path / "photo.png", tmp_path / "raw_mask.png")], 3)


def test_data_package_imports_no_tensorflow_until_a_pipeline_is_built():
    import subprocess
    import sys

    code = ("import sys\n"
            "from vggunet.data import (find_pairs, load_image, load_mask, validate_pairs,\n"
            "    class_weights, border_weight_map, read_pairs_list, IMAGE_EXTENSIONS)\n"
            "from vggunet.data.images import read_image\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # The pipeline's names resolve, here: the subprocess would spend its time importing
    # TensorFlow, which this process has already done.
    from vggunet.data import Augment, make_dataset as lazy_make_dataset
    from vggunet.data.augment import Augment as augment_class
    from vggunet.data.pipeline import make_dataset as pipeline_make_dataset

    assert (lazy_make_dataset, Augment) == (pipeline_make_dataset, augment_class)


def test_ignore_index_inside_the_class_range_is_not_counted(tmp_path):
    m = np.array([[0, 0, 1, 2], [0, 1, 1, 2]], np.uint8)
    _save(tmp_path / "images" / "a.png", m * 50)
    _save(tmp_path / "masks" / "a.png", m)
    info = validate_pairs(find_pairs(tmp_path / "images", tmp_path / "masks"), 3,
                          ignore_index=0)
    assert info.ignored_pixels == 3 and info.class_pixel_counts.tolist() == [0, 3, 2]
    assert info.labelled_pixels == 5
    np.testing.assert_array_equal(class_weights(info, 3), class_weights([m], 3, ignore_index=0))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(scale="units"),
     "scale must be one of ('raw', 'unit'), got 'units'. Did you mean 'unit'?"),
    (dict(sample_weights="border_weights"), "Did you mean 'border'?"),
    (dict(mask_format="pallete"), "Did you mean 'palette'?"),
    (dict(channels=0), "channels must be a positive integer, got 0."),
    (dict(pad_to=0), "pad_to must be a positive integer or None, got 0."),
    (dict(pad_to=16.0), "pad_to must be a positive integer or None, got 16.0."),
    (dict(crop=(64, 0)), "crop must be (H, W) with positive ints, got (64, 0)"),
    (dict(size=64.5), "size must be (H, W) with positive ints, got 64.5"),
    (dict(augment=True), "augment must be an Augment, its string spec"),
    (dict(batch_size=2.5), "batch_size must be an integer, got 2.5."),
    (dict(num_classes=0), "num_classes must be >= 1, got 0."),
    (dict(mask_channel=-1), "mask_channel must be an integer >= 0, got -1."),
    (dict(sample_weights="border", border_sigma=0), "border_sigma must be a number > 0"),
])
def test_make_dataset_checks_arguments_before_reading_files(tmp_path, kwargs, needle):
    from vggunet.errors import ArgumentError

    kwargs = {"num_classes": 2, **kwargs}
    with pytest.raises(ArgumentError) as exc:  # the folders do not exist: never read
        make_dataset(tmp_path / "none", tmp_path / "none", **kwargs)
    assert needle in str(exc.value)


def test_split_typo_suggests_the_split(tmp_path):
    _write_set(tmp_path / "train", n=1)
    _write_set(tmp_path / "val", n=1)
    with pytest.raises(DataError, match="available: train, val. Did you mean 'val'?"):
        load_split(tmp_path, "vals")


# --------------------------------------------------------------------------- ISBI


@needs_isbi
def test_isbi_pair_binary_and_membrane_fraction():
    pairs = load_split(ISBI)
    assert len(pairs) == 30 and pairs[2][0].name == "2.png" and pairs[10][0].name == "10.png"
    raw = np.asarray(Image.open(pairs[0][1]))
    mask = load_mask(pairs[0][1], "binary", num_classes=2)
    assert set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, (raw == 255).astype(np.int32))
    info = validate_pairs(pairs[:3], 2, "binary")
    assert info.image_sizes == {(512, 512): 3} and info.image_channels == {1: 3}
    assert 0.18 < info.class_frequencies[0] < 0.26  # ~22 % membrane
    image = load_image(pairs[0][0], 3)
    assert image.shape == (512, 512, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 255 and image.max() > 1


@needs_isbi
def test_isbi_pipeline_batches():
    pairs = load_split(ISBI)[:4]
    ds = make_dataset(pairs=pairs, num_classes=2, mask_format="binary", batch_size=2,
                      crop=(128, 128), flip=True, augment="rot90,elastic=100:8:1",
                      seed=0, sample_weights="median_frequency")
    images, masks, weights = next(iter(ds))
    assert images.shape == (2, 128, 128, 3) and images.dtype.name == "float32"
    assert masks.shape == (2, 128, 128) and masks.dtype.name == "int32"
    assert weights.shape == (2, 128, 128)
    assert float(images.numpy().max()) > 1.0  # raw range, not unit
    assert set(np.unique(masks.numpy())) <= {0, 1}
    cw = class_weights(validate_pairs(pairs, 2, "binary"), 2)
    np.testing.assert_allclose(weights.numpy(), cw[masks.numpy()], rtol=1e-6)


# --------------------------------------------------------------------------- pipeline


def _collect(ds):
    return [tuple(t.numpy() for t in batch) for batch in ds]


def test_pipeline_dtypes_shapes_scale_channels(tmp_path):
    masks = _write_set(tmp_path, n=3)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3, batch_size=3,
                      shuffle=False, channels=1, scale="unit")
    images, out = next(iter(ds))
    assert images.shape == (3, 12, 16, 1) and images.dtype.name == "float32"
    np.testing.assert_allclose(images.numpy()[..., 0], np.stack(masks) * 40 / 255.0,
                               rtol=1e-6)
    np.testing.assert_array_equal(out.numpy(), np.stack(masks))


def test_pipeline_deterministic_with_seed(tmp_path):
    _write_set(tmp_path, n=5, h=20, w=20)
    kw = dict(num_classes=3, batch_size=2, crop=(12, 12), flip=True,
              augment="rot90,elastic=40:3:0.5,brightness", shuffle=True, repeat=False)
    a = make_dataset(tmp_path / "images", tmp_path / "masks", seed=42, **kw)
    b = make_dataset(tmp_path / "images", tmp_path / "masks", seed=42, **kw)
    a1, a2, b1 = _collect(a), _collect(a), _collect(b)
    assert len(a1) == 3
    for x, y in zip(a1, b1):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    # Second epoch reshuffles and re-augments; another seed differs.
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a1, a2))
    c1 = _collect(make_dataset(tmp_path / "images", tmp_path / "masks", seed=43, **kw))
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a1, c1))
    # cache=True gives the same stream as decoding every time.
    d1 = _collect(make_dataset(tmp_path / "images", tmp_path / "masks", seed=42,
                               cache=True, **kw))
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a1, d1))


@pytest.mark.parametrize("crop", [(8, 10), (20, 24)])
def test_crop_and_flip_keep_alignment(tmp_path, crop):
    _write_set(tmp_path, n=4, h=12, w=16)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3,
                      batch_size=4, crop=crop, flip=True, augment="rot90", seed=1,
                      repeat=True)
    it = iter(ds)
    seen = set()
    for _ in range(4):
        images, masks = next(it)
        images, masks = images.numpy(), masks.numpy()
        assert images.shape == (4, *crop, 3) and masks.shape == (4, *crop)
        np.testing.assert_array_equal(images, np.repeat(masks[..., None] * 40.0, 3, -1))
        seen.add(masks.tobytes())
    assert len(seen) > 1


def test_crop_is_a_real_window_of_the_mask(tmp_path):
    masks = _write_set(tmp_path, n=1, h=12, w=16)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3,
                      batch_size=1, crop=(5, 6), seed=3, repeat=True)
    m = masks[0]
    windows = {m[i:i + 5, j:j + 6].tobytes() for i in range(8) for j in range(11)}
    for _, (_, out) in zip(range(5), ds):
        assert out.numpy()[0].astype(np.uint8).tobytes() in windows


def test_pad_to_multiple(tmp_path):
    _write_set(tmp_path, n=2, h=20, w=27)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3,
                      batch_size=2, pad_to=8, ignore_index=255, shuffle=False,
                      sample_weights="inverse_frequency")
    images, masks, weights = (t.numpy() for t in next(iter(ds)))
    assert images.shape == (2, 24, 32, 3) and masks.shape == (2, 24, 32)
    assert (masks[:, 20:, :] == 255).all() and (masks[:, :, 27:] == 255).all()
    assert (weights[:, 20:, :] == 0).all() and (weights[:, :20, :27] > 0).all()
    # Image padding reflects (row 20 mirrors row 18, col 27 mirrors col 25).
    np.testing.assert_array_equal(images[:, 20], images[:, 18])
    np.testing.assert_array_equal(images[:, :, 27], images[:, :, 25])
    np.testing.assert_array_equal(images[:, :20, :27, 0], masks[:, :20, :27] * 40.0)
    ds0 = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=3,
                       batch_size=2, pad_to=8, shuffle=False)
    assert (next(iter(ds0))[1].numpy()[:, 20:] == 0).all()


def test_palette_pipeline_and_ignore_passthrough(tmp_path):
    colours = {0: (0, 0, 0), 1: (200, 0, 0), 255: (255, 255, 255)}
    lut = np.zeros((256, 3), np.uint8)
    for k, c in colours.items():
        lut[k] = c
    m = _mask(k=2)
    m[0, :4] = 255
    _save(tmp_path / "images" / "a.png", m)
    _save(tmp_path / "masks" / "a_mask.png", lut[m])
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2,
                      mask_format="palette", palette=colours, ignore_index=255,
                      batch_size=1, shuffle=False)
    _, masks = next(iter(ds))
    np.testing.assert_array_equal(masks.numpy()[0], m)


# --------------------------------------------------------------------------- weights


def test_class_weights_hand_computed():
    a = np.array([[0, 0, 0, 1]])   # 3 x class 0, 1 x class 1
    b = np.array([[0, 2, 2, 2]])   # 1 x class 0, 3 x class 2
    # counts: c0=4, c1=1, c2=3, c3=0; pixels of images containing c: 8, 4, 4
    # freq = [0.5, 0.25, 0.75] -> median 0.5 -> weights [1, 2, 2/3], absent class 3 -> 0
    mf = class_weights([a, b], 4, "median_frequency")
    np.testing.assert_allclose(mf, [1.0, 2.0, 2.0 / 3.0, 0.0], rtol=1e-6)
    # inverse: N=8, K=3 -> 8 / (3 n_c)
    inv = class_weights(np.stack([a, b]), 4, "inverse_frequency")
    np.testing.assert_allclose(inv, [8 / 12, 8 / 3, 8 / 9, 0.0], rtol=1e-6)
    # ignore_index pixels are not counted
    c = np.array([[0, 1, 255, 255]])
    np.testing.assert_allclose(class_weights(c, 2, "inverse_frequency", ignore_index=255),
                               [1.0, 1.0])


def test_class_weights_from_pairs_and_info_agree(tmp_path):
    _write_set(tmp_path, n=3)
    pairs = find_pairs(tmp_path / "images", tmp_path / "masks")
    info = validate_pairs(pairs, 3)
    np.testing.assert_allclose(class_weights(pairs, 3), class_weights(info, 3))
    masks = [load_mask(p[1]) for p in pairs]
    np.testing.assert_allclose(class_weights(masks, 3), class_weights(info, 3))


def test_border_weight_map_peaks_between_close_objects():
    mask = np.zeros((40, 60), np.int32)
    mask[10:30, 5:20] = 1
    mask[10:30, 23:38] = 1   # 3 px gap to the first object
    mask[10:30, 55:59] = 1   # far from both
    w = border_weight_map(mask, w0=10.0, sigma=5.0)
    assert w.dtype == np.float32 and w.shape == mask.shape
    gap = w[20, 21]
    # Gap pixel (20, 21): 2 px from column 19 of one object and from column 23 of the other.
    np.testing.assert_allclose(gap, 1.0 + 10.0 * np.exp(-(2.0 + 2.0) ** 2 / 50.0), rtol=1e-5)
    assert gap > 5.0 * w[20, 46]          # background far from the close pair
    assert w[20, 46] < 2.0 and w[2, 12] < gap
    np.testing.assert_array_equal(w[mask == 1], 1.0)  # objects keep w_c
    cw = np.array([0.5, 2.0], np.float32)
    wc = border_weight_map(mask, class_weights=cw)
    np.testing.assert_allclose(wc[mask == 1], 2.0)
    assert wc[20, 21] == pytest.approx(gap - 0.5)


def test_border_weight_map_single_object_and_ignore():
    mask = np.zeros((10, 10), np.int32)
    mask[2:5, 2:5] = 1
    mask[9, 9] = 255
    w = border_weight_map(mask, ignore_index=255)
    assert w[9, 9] == 0.0
    np.testing.assert_array_equal(w[mask != 255], 1.0)  # no second object, no border term


def test_components_and_distance_helpers_are_exact():
    rng = np.random.default_rng(0)
    fg = rng.random((23, 31)) < 0.35
    labels, n = DP._label_components(fg)
    assert (labels > 0).sum() == fg.sum() and n == len(np.unique(labels[labels > 0]))
    # 4-neighbours in the foreground share a label; distinct labels never touch.
    for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        both = (a > 0) & (b > 0)
        np.testing.assert_array_equal(a[both], b[both])
    target = rng.random((17, 13)) < 0.05
    target[0, 0] = True
    ty, tx = np.nonzero(target)
    yy, xx = np.mgrid[:17, :13]
    brute = np.sqrt((yy[..., None] - ty) ** 2 + (xx[..., None] - tx) ** 2).min(-1)
    np.testing.assert_allclose(DP._distance_to(target), brute, rtol=1e-12)


def test_border_sample_weights_in_pipeline(tmp_path):
    m = np.zeros((16, 16), np.uint8)
    m[2:14, 2:7] = 1
    m[2:14, 9:14] = 1
    _save(tmp_path / "images" / "a.png", m * 100)
    _save(tmp_path / "masks" / "a.png", m)
    ds = make_dataset(tmp_path / "images", tmp_path / "masks", num_classes=2,
                      batch_size=1, shuffle=False, sample_weights="border")
    _, masks, weights = next(iter(ds))
    cw = class_weights([m], 2)
    expected = border_weight_map(m.astype(np.int32), class_weights=cw)
    np.testing.assert_allclose(weights.numpy()[0], expected, rtol=1e-6)
    assert weights.numpy()[0, 8, 7] > weights.numpy()[0, 0, 0]


# --------------------------------------------------------------------------- CLI switches (issue 5)


def _cli_train_args(extra: list[str], out: Path):
    from vggunet.cli import build_parser

    return build_parser().parse_args([
        "train", "--images", str(ISBI / "image"), "--masks", str(ISBI / "label"),
        "--mask-format", "binary", "--crop", "64x64", "--batch-size", "2", "--seed", "0",
        "--out", str(out), *extra,
    ])


@needs_isbi
def test_cli_class_weights_flag_reaches_the_pipeline(tmp_path):
    from vggunet.cli import make_datasets

    train_ds, _, n_train, _ = make_datasets(
        _cli_train_args(["--sample-weights", "median_frequency"], tmp_path))
    _, masks, weights = next(iter(train_ds))
    pairs = find_pairs(ISBI / "image", ISBI / "label")
    cw = class_weights(pairs, 2, mask_format="binary")
    assert n_train == 30 and cw[0] > 1.0 > cw[1]  # membrane is the rare class
    np.testing.assert_allclose(weights.numpy(), cw[masks.numpy()], rtol=1e-6)


@needs_isbi
def test_cli_border_weights_flag_reaches_the_pipeline(tmp_path):
    from vggunet.cli import make_datasets

    args = _cli_train_args(["--sample-weights", "border", "--border-w0", "5",
                            "--border-sigma", "3"], tmp_path)
    assert (args.sample_weights, args.border_w0, args.border_sigma) == ("border", 5.0, 3.0)
    _, masks, weights = next(iter(make_datasets(args)[0]))
    pairs = find_pairs(ISBI / "image", ISBI / "label")
    cw = class_weights(pairs, 2, mask_format="binary")
    for m, w in zip(masks.numpy(), weights.numpy()):
        np.testing.assert_allclose(w, border_weight_map(m, 5.0, 3.0, cw), rtol=1e-5)
    assert weights.numpy().max() > cw.max()  # the separation term is switched on


def test_cli_without_sample_weights_yields_pairs_only(tmp_path):
    _write_set(tmp_path / "d", n=2)
    from vggunet.cli import build_parser, make_datasets

    args = build_parser().parse_args([
        "train", "--images", str(tmp_path / "d" / "images"), "--masks",
        str(tmp_path / "d" / "masks"), "--num-classes", "3", "--batch-size", "1",
        "--out", str(tmp_path / "run")])
    assert args.sample_weights is None
    assert len(next(iter(make_datasets(args)[0]))) == 2
