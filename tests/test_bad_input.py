"""Bad input, one row per case: the exception type, and a message naming the offending thing.

Every row of `CASES` runs through the Python API (`test_api`): it must raise exactly the row's
exception class with every fragment in the message (the file, layer, value or argument at
fault, and where it helps what would be valid), or, for the two rows whose sensible behaviour is
a correct load (16-bit images/masks, RGBA images), return the asserted values. Rows with a
command line run it in-process through `vggunet.cli.main` (`test_cli`): exit code 2, exactly one
stderr line `vggunet <command>: error: ...` with the fragments, no traceback.
`test_cli_subprocess` runs two of them as real `python -m vggunet` processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras")

from conftest import one_block_unet  # noqa: E402
from vggunet import build_vgg_unet  # noqa: E402
from vggunet.cli import parse_size, positive_int  # noqa: E402
from vggunet.data import (  # noqa: E402
    DataError,
    discover_layout,
    find_pairs,
    load_image,
    load_mask,
    make_dataset,
    validate_pairs,
)
from vggunet.encoders import build_encoder  # noqa: E402
from vggunet.errors import ArgumentError, CheckpointError, MissingFileError  # noqa: E402
from vggunet.freezing import freeze, unfreeze  # noqa: E402
from vggunet.predict import (  # noqa: E402
    OutputError,
    PredictionError,
    predict_folder,
    predict_proba,
    read_image,
    save_mask_png,
)
from vggunet.saving import ModelFileError, UnsafeModelError, load_model, save_model  # noqa: E402
from vggunet.training import train  # noqa: E402
from vggunet.weights import ImagenetWeightsUnavailable, WeightsError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Flags for a small encoder U-Net on the command line (full VGG16 encoder, tiny decoder).
TINY = ["--decoder-filters", "8,8,8,8,8", "--bottleneck-filters", "8", "--precision", "float32"]
NO_WEIGHTS = ["--weights", "none", *TINY]
_TF_NOISE = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before "
                       r"absl|To enable the following instructions)")


tiny_unet = one_block_unet


def png(path: Path, array: Any, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)
    return path


def pair_set(root: Path, n: int = 2, size: tuple[int, int] = (64, 64),
             masks: list[np.ndarray] | None = None, sizes: list[tuple[int, int]] | None = None,
             mask_sizes: list[tuple[int, int]] | None = None) -> tuple[Path, Path]:
    """`root/images/i.png` (grey) + `root/masks/i.png` (class indices 0/1)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (sizes or [size] * n)[i]
        mh, mw = (mask_sizes or sizes or [size] * n)[i]
        png(root / "images" / f"{i}.png", rng.integers(0, 256, (h, w)).astype(np.uint8))
        mask = masks[i] if masks is not None else rng.integers(0, 2, (mh, mw)).astype(np.uint8)
        png(root / "masks" / f"{i}.png", mask)
    return root / "images", root / "masks"


# --------------------------------------------------------------------------- shared fixture


@dataclasses.dataclass
class Shared:
    root: Path
    model_path: Path          # a tiny U-Net saved with vggunet.save_model
    other_model_path: Path    # a tiny U-Net of another shape (decoder filters 4)
    run_dir: Path             # a run with one epoch of the tiny U-Net: checkpoints/last.keras
    lambda_path: Path         # a .keras file with a Lambda layer
    other_arch_weights: Path  # a Keras 3 .weights.h5 of a small non-VGG network
    crops: tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, isbi_dir) -> Shared:
    root = tmp_path_factory.mktemp("bad_input")
    images, masks = [], []
    for i in range(2):
        image = load_image(isbi_dir / "image" / f"{i}.png")
        mask = load_mask(isbi_dir / "label" / f"{i}.png", "binary", num_classes=2)
        images.append(image[:32, :32])
        masks.append(mask[:32, :32])
    crops = (np.stack(images), np.stack(masks))

    model = tiny_unet()
    model_path = save_model(model, root / "tiny.keras")
    other_model_path = save_model(tiny_unet(filters=4), root / "other.keras")
    import tensorflow as tf

    run_dir = root / "run"
    data = tf.data.Dataset.from_tensor_slices(crops).batch(2)
    train(model, data, out_dir=run_dir, epochs=1, metrics=("miou",), jit_compile=False,
          tensorboard=False, verbose=0)

    inputs = keras.Input((4,))
    lambda_path = root / "lambda.keras"
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(lambda_path)

    small = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.Conv2D(2, 1)])
    other_arch = root / "small_cnn.weights.h5"
    small.save_weights(other_arch)
    return Shared(root, model_path, other_model_path, run_dir, lambda_path, other_arch, crops)


@dataclasses.dataclass
class Env:
    """What a case gets: a fresh folder, the shared fixtures, and monkeypatch."""

    tmp: Path
    shared: Shared
    mp: pytest.MonkeyPatch


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: what to call, what it must raise, and the command-line variant.

    Attributes:
        id: the row's name.
        api: `api(env)` performs the call (or, for `error=None`, loads and asserts values).
        error: the exact exception class expected; None = a correct load, asserted in `api`.
        fragments: substrings the message must contain (`{tmp}` is replaced by the folder).
        cli: `cli(env)` gives argv for `vggunet.cli.main`; None = no command-line variant.
        cli_fragments: substrings of the one-line CLI error (default: `fragments`).
        setup: `setup(env)` prepares files both variants use.
        note: the decided behaviour, when it is not obviously an error.
    """

    id: str
    api: Callable[[Env], Any]
    error: type[BaseException] | None
    fragments: tuple[str, ...] = ()
    cli: Callable[[Env], list[str]] | None = None
    cli_fragments: tuple[str, ...] | None = None
    setup: Callable[[Env], Any] | None = None
    note: str = ""


def _train_argv(env: Env, images: Path, masks: Path, *extra: str) -> list[str]:
    return ["train", "--images", str(images), "--masks", str(masks), "--num-classes", "2",
            *NO_WEIGHTS, "--epochs", "1", "--batch-size", "2", "--out", str(env.tmp / "out"),
            "--quiet", *extra]


def _data(env: Env) -> tuple[Path, Path]:
    return env.tmp / "d" / "images", env.tmp / "d" / "masks"


# --------------------------------------------------------------------------- setups


def setup_images_without_masks(env: Env) -> None:
    images, masks = pair_set(env.tmp / "d", n=3)
    (masks / "2.png").unlink()


def setup_masks_without_images(env: Env) -> None:
    images, masks = pair_set(env.tmp / "d", n=2)
    png(masks / "9.png", np.zeros((64, 64), np.uint8))


def setup_value_out_of_range(env: Env) -> None:
    bad = np.zeros((64, 64), np.uint8)
    bad[3, 7] = 5
    pair_set(env.tmp / "d", n=2, masks=[np.zeros((64, 64), np.uint8), bad])


def setup_size_mismatch(env: Env) -> None:
    pair_set(env.tmp / "d", n=2, sizes=[(64, 64), (64, 64)], mask_sizes=[(64, 64), (48, 64)])


def setup_mixed_sizes(env: Env) -> None:
    pair_set(env.tmp / "d", n=2, sizes=[(64, 64), (96, 64)])


def setup_truncated_png(env: Env) -> None:
    images, _ = pair_set(env.tmp / "d", n=2)
    data = (images / "1.png").read_bytes()
    (images / "1.png").write_bytes(data[: len(data) // 2])


def setup_not_an_image(env: Env) -> None:
    images, _ = pair_set(env.tmp / "d", n=2)
    (images / "1.png").write_text("this is a text file, not a PNG\n")


def setup_empty_folders(env: Env) -> None:
    for name in ("images", "masks"):
        (env.tmp / "d" / name).mkdir(parents=True)


def setup_palette_unknown(env: Env) -> None:
    images, _ = pair_set(env.tmp / "d", n=1)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, 32:] = (255, 0, 0)
    rgb[10, 20] = (9, 9, 9)
    png(env.tmp / "d" / "masks" / "0.png", rgb)


def setup_rgb_masks(env: Env) -> None:
    images, _ = pair_set(env.tmp / "d", n=1)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[5, 6] = (1, 0, 0)
    png(env.tmp / "d" / "masks" / "0.png", rgb)


def setup_16bit_mask_out_of_range(env: Env) -> None:
    images, _ = pair_set(env.tmp / "d", n=1)
    mask = np.zeros((64, 64), np.uint16)
    mask[1, 2] = 1000
    png(env.tmp / "d" / "masks" / "0.png", mask)


def setup_unwritable_output(env: Env) -> None:
    (env.tmp / "blocker").write_text("a file where the output folder's parent should be")
    png(env.tmp / "in" / "a.png", np.full((40, 40), 128, np.uint8))


def setup_corrupt_files(env: Env) -> None:
    (env.tmp / "corrupt.keras").write_bytes(os.urandom(2048))
    (env.tmp / "corrupt.h5").write_bytes(b"\x89HDF\r\n" + os.urandom(2048))
    import h5py

    with h5py.File(env.tmp / "plain.h5", "w") as handle:
        handle["numbers"] = np.arange(10)


def setup_not_image_predict(env: Env) -> None:
    (env.tmp / "in").mkdir()
    (env.tmp / "in" / "scan.png").write_bytes(b"GIF89a but not really")


# --------------------------------------------------------------------------- api calls


def check_16bit_image_loads(env: Env) -> None:
    values = np.array([[0, 257, 65535], [1000, 30000, 514]], np.uint16)
    path = png(env.tmp / "img16.png", values)
    assert Image.open(path).mode.startswith("I;16")
    image = load_image(path, channels=3)
    assert image.shape == (2, 3, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], values / 257.0, rtol=1e-6)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    np.testing.assert_allclose(read_image(path, 1), values / 257.0, rtol=1e-6)


def check_16bit_mask_loads(env: Env) -> None:
    values = np.array([[0, 1, 2], [2, 1, 0]], np.uint16)
    path = png(env.tmp / "mask16.png", values)
    assert Image.open(path).mode.startswith("I;16")
    mask = load_mask(path, num_classes=3)
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, values)


def check_rgba_image_drops_alpha(env: Env) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 10, 20, 30
    rgba[..., 3] = np.arange(20).reshape(4, 5) * 12  # alpha must not leak into the pixels
    path = png(env.tmp / "rgba.png", rgba, "RGBA")
    image = load_image(path, channels=3)
    assert image.shape == (4, 5, 3)
    np.testing.assert_array_equal(image, rgba[..., :3].astype(np.float32))
    np.testing.assert_array_equal(read_image(path, 3), rgba[..., :3].astype(np.float32))
    grey = load_image(path, channels=1)
    np.testing.assert_allclose(grey[..., 0], 0.299 * 10 + 0.587 * 20 + 0.114 * 30, rtol=1e-5)


def disk_full_during_checkpoint(env: Env) -> None:
    import tensorflow as tf

    out = env.tmp / "run"
    data = tf.data.Dataset.from_tensor_slices(env.shared.crops).batch(2)
    real_save = keras.Model.save
    calls = []

    def save(self, filepath, *args, **kwargs):
        calls.append(str(filepath))
        if len(calls) >= 2:  # the first checkpoint fits, the disk is full for the second
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, filepath, *args, **kwargs)

    env.mp.setattr(keras.Model, "save", save)
    try:
        train(tiny_unet(), data, out_dir=out, epochs=2, metrics=("miou",), jit_compile=False,
              tensorboard=False, verbose=0)
    finally:
        env.mp.undo()
        # The failed write left the first epoch's checkpoint intact and no temp file behind.
        names = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert names == ["best.keras", "last.keras"], names
        loaded = load_model(out / "checkpoints" / "last.keras", compile=True)
        assert int(loaded.optimizer.iterations.numpy()) == 1
        import json

        assert json.loads((out / "state.json").read_text())["completed_epochs"] == 1


def disk_full_cli(env: Env) -> list[str]:
    def save(self, filepath, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    env.mp.setattr(keras.Model, "save", save)
    images, masks = pair_set(env.tmp / "d", n=2, size=(32, 32))
    return ["train", "--model", str(env.shared.model_path), "--images", str(images),
            "--masks", str(masks), "--num-classes", "2", "--epochs", "1", "--batch-size", "2",
            "--out", str(env.tmp / "out"), "--quiet"]


def resume_other_model(env: Env) -> None:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(env.shared.crops).batch(2)
    train(tiny_unet(filters=4), data, out_dir=env.shared.run_dir, epochs=2, resume=True,
          metrics=("miou",), jit_compile=False, tensorboard=False, verbose=0)


def resume_other_model_cli(env: Env) -> list[str]:
    images, masks = pair_set(env.tmp / "d", n=2, size=(32, 32))
    return ["train", "--model", str(env.shared.other_model_path), "--images", str(images),
            "--masks", str(masks), "--num-classes", "2", "--epochs", "2", "--batch-size", "2",
            "--resume", "--out", str(env.shared.run_dir), "--quiet"]


def predict_on(env: Env, image: Any) -> Any:
    return predict_proba(load_model(env.shared.model_path, compile=False), image)


def nan_image() -> np.ndarray:
    image = np.full((40, 40, 3), 100.0, np.float32)
    image[5, 6, 1] = np.nan
    return image


def inf_image() -> np.ndarray:
    image = np.full((40, 40, 3), 100.0, np.float32)
    image[7, 8, 2] = np.inf
    return image


# --------------------------------------------------------------------------- the table

CASES: list[Case] = [
    # ---- model construction
    Case("unknown_backbone",
         lambda e: build_vgg_unet("vgg17", weights=None), ArgumentError,
         ("'vgg17'", "vgg16", "resnet50"),
         cli=lambda e: ["inspect", "--backbone", "vgg17"],
         cli_fragments=("--backbone", "'vgg17'", "vgg16")),
    Case("skip_layer_not_in_backbone",
         lambda e: build_vgg_unet("vgg16", weights=None,
                                  skip_layers=["block1_conv2", "block9_conv1"]),
         ArgumentError,
         ("block9_conv1", "not found in backbone", "Valid layer names", "block1_conv1")),
    Case("bottleneck_source_not_in_backbone",
         lambda e: build_encoder("vgg16", bottleneck_source="block6_conv1"),
         ArgumentError, ("bottleneck_source", "block6_conv1", "Valid layer names")),
    Case("freeze_spec_matches_nothing",
         lambda e: freeze(tiny_unet(), ["block1", "block9"]), ArgumentError,
         ("['block9']", "matches no layer", "block1")),
    Case("freeze_spec_matches_nothing_cli",
         lambda e: freeze(tiny_unet(), "block9"), ArgumentError, ("block9", "matches no layer"),
         cli=lambda e: ["inspect", *NO_WEIGHTS, "--freeze", "block9"]),
    Case("unfreeze_spec_matches_nothing",
         lambda e: unfreeze(tiny_unet(), "decoder_stage7"), ArgumentError,
         ("decoder_stage7", "matches no layer"),
         cli=lambda e: ["inspect", *NO_WEIGHTS, "--unfreeze", "decoder_stage7"]),
    Case("freeze_count_out_of_range",
         lambda e: freeze(tiny_unet(), 10_000), ArgumentError, ("10000", "out of range", "use 1.."),
         cli=lambda e: ["inspect", *NO_WEIGHTS, "--freeze", "10000"]),
    Case("num_classes_zero",
         lambda e: build_vgg_unet(num_classes=0, weights=None), ArgumentError,
         ("num_classes", "0"),
         cli=lambda e: ["inspect", *NO_WEIGHTS, "--num-classes", "0"],
         cli_fragments=("--num-classes", "positive integer", "0")),
    Case("num_classes_negative_for_data",
         lambda e: validate_pairs(find_pairs(*pair_set(e.tmp / "d")), num_classes=-1),
         ArgumentError, ("num_classes must be >= 1", "-1"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d"), "--num-classes", "-1"),
         cli_fragments=("--num-classes", "-1")),
    Case("input_smaller_than_32",
         lambda e: build_vgg_unet(input_shape=(16, 64, 3), weights=None), ArgumentError,
         ("height 16", "at least 32"),
         cli=lambda e: ["inspect", *NO_WEIGHTS, "--input-size", "16x64"],
         cli_fragments=("16", "at least 32")),
    # Issue 16: pretrained weights take any channel count (the first conv is tiled), so what
    # remains to fail here is the offline ImageNet download, with its how-to message.
    Case("four_channels_with_pretrained_weights",
         lambda e: build_vgg_unet(input_shape=(None, None, 4), weights="imagenet"),
         ImagenetWeightsUnavailable,
         ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "{tmp}/keras_home/models",
          "weights=None"),
         setup=lambda e: e.mp.setenv("KERAS_HOME", str(e.tmp / "keras_home")),
         cli=lambda e: ["inspect", "--weights", "imagenet", *TINY, "--channels", "4"]),
    # ---- weights files
    Case("weights_path_missing",
         lambda e: build_vgg_unet(weights=str(e.tmp / "nope.weights.h5")), WeightsError,
         ("{tmp}/nope.weights.h5", "not found", "weights='imagenet'"),
         cli=lambda e: ["inspect", "--weights", str(e.tmp / "nope.weights.h5"), *TINY]),
    Case("weights_file_for_another_architecture",
         lambda e: build_vgg_unet(weights=str(e.shared.other_arch_weights)), WeightsError,
         ("small_cnn.weights.h5", "does not fit backbone 'vgg16'", "layer 'block1_conv1'",
          "(3, 3, 3, 4)", "(3, 3, 3, 64)"),
         cli=lambda e: ["inspect", "--weights", str(e.shared.other_arch_weights), *TINY]),
    Case("weights_file_corrupt",
         lambda e: build_vgg_unet(weights=str(e.tmp / "corrupt.h5")), WeightsError,
         ("{tmp}/corrupt.h5", "corrupt"), setup=setup_corrupt_files,
         cli=lambda e: ["inspect", "--weights", str(e.tmp / "corrupt.h5"), *TINY]),
    Case("weights_file_hdf5_but_not_keras",
         lambda e: build_vgg_unet(weights=str(e.tmp / "plain.h5")), WeightsError,
         ("{tmp}/plain.h5", "not a Keras weights file"), setup=setup_corrupt_files,
         cli=lambda e: ["inspect", "--weights", str(e.tmp / "plain.h5"), *TINY]),
    # ---- model files
    Case("model_file_missing",
         lambda e: load_model(e.tmp / "missing.keras"), MissingFileError,
         ("{tmp}/missing.keras",),
         cli=lambda e: ["export", "--model", str(e.tmp / "missing.keras"), "--out",
                        str(e.tmp / "x.keras")]),
    Case("model_file_corrupt",
         lambda e: load_model(e.tmp / "corrupt.keras"), ModelFileError,
         ("{tmp}/corrupt.keras", "not a zip archive"), setup=setup_corrupt_files,
         cli=lambda e: ["inspect", "--model", str(e.tmp / "corrupt.keras")]),
    Case("model_file_with_lambda_layer",
         lambda e: load_model(e.shared.lambda_path), UnsafeModelError,
         ("Refusing to load", "lambda.keras", "Lambda layer"),
         cli=lambda e: ["predict", "--model", str(e.shared.lambda_path), "--input",
                        str(REPO / "vggunet" / "sample"), "--out", str(e.tmp / "o")]),
    # ---- data folders and pairing
    Case("data_folder_missing",
         lambda e: find_pairs(e.tmp / "nope" / "images", e.tmp / "nope" / "masks"), DataError,
         ("image folder", "{tmp}/nope/images", "does not exist"),
         cli=lambda e: _train_argv(e, e.tmp / "nope" / "images", e.tmp / "nope" / "masks")),
    Case("data_root_without_known_layout",
         lambda e: discover_layout(e.tmp), DataError,
         ("no known data layout", "{tmp}", "images/+masks/"),
         cli=lambda e: ["train", "--data", str(e.tmp), *NO_WEIGHTS, "--out",
                        str(e.tmp / "out")]),
    Case("data_folder_empty",
         lambda e: find_pairs(*_data(e)), DataError,
         ("image folder", "{tmp}/d/images", "has no image files", "(it is empty)", ".png"),
         setup=setup_empty_folders, cli=lambda e: _train_argv(e, *_data(e))),
    Case("images_without_masks",
         lambda e: find_pairs(*_data(e)), DataError,
         ("1 image(s) in {tmp}/d/images have no mask", "2.png"),
         setup=setup_images_without_masks, cli=lambda e: _train_argv(e, *_data(e))),
    Case("masks_without_images",
         lambda e: find_pairs(*_data(e)), DataError,
         ("1 mask(s) in {tmp}/d/masks have no image", "9.png"),
         setup=setup_masks_without_images, cli=lambda e: _train_argv(e, *_data(e))),
    # ---- file contents
    Case("mask_value_out_of_range",
         lambda e: make_dataset(*_data(e), num_classes=2), DataError,
         ("{tmp}/d/masks/1.png", "value(s) 5", "valid class range 0..1", "row 3, col 7"),
         setup=setup_value_out_of_range, cli=lambda e: _train_argv(e, *_data(e))),
    Case("mask_and_image_of_different_sizes",
         lambda e: validate_pairs(find_pairs(*_data(e)), 2), DataError,
         ("size mismatch", "{tmp}/d/images/1.png is 64x64", "{tmp}/d/masks/1.png is 48x64"),
         setup=setup_size_mismatch, cli=lambda e: _train_argv(e, *_data(e))),
    Case("truncated_png",
         lambda e: load_image(_data(e)[0] / "1.png"), DataError,
         ("{tmp}/d/images/1.png", "truncated or corrupt"),
         setup=setup_truncated_png, cli=lambda e: _train_argv(e, *_data(e))),
    Case("non_image_file_with_png_extension",
         lambda e: load_image(_data(e)[0] / "1.png"), DataError,
         ("{tmp}/d/images/1.png", "not a readable image"),
         setup=setup_not_an_image, cli=lambda e: _train_argv(e, *_data(e))),
    Case("non_image_file_for_predict",
         lambda e: read_image(e.tmp / "in" / "scan.png"), PredictionError,
         ("cannot read image", "{tmp}/in/scan.png"), setup=setup_not_image_predict,
         cli=lambda e: ["predict", "--model", str(e.shared.model_path), "--input",
                        str(e.tmp / "in"), "--out", str(e.tmp / "o")]),
    Case("png_16bit_image_loads_scaled", check_16bit_image_loads, None,
         note="correct load: 16-bit grey images are scaled by 1/257 to the 8-bit range"),
    Case("png_16bit_mask_loads_class_values", check_16bit_mask_loads, None,
         note="correct load: 16-bit masks keep their class indices unchanged"),
    Case("png_16bit_mask_value_out_of_range",
         lambda e: load_mask(_data(e)[1] / "0.png", num_classes=3), DataError,
         ("{tmp}/d/masks/0.png", "value(s) 1000", "0..2"),
         setup=setup_16bit_mask_out_of_range,
         cli=lambda e: _train_argv(e, *_data(e), "--num-classes", "3")),
    Case("rgba_image_drops_alpha", check_rgba_image_drops_alpha, None,
         note="correct load: RGBA images keep R, G, B; alpha is dropped"),
    Case("colour_mask_in_index_format",
         lambda e: load_mask(_data(e)[1] / "0.png", "index"), DataError,
         ("{tmp}/d/masks/0.png", "differing channels", "(1, 0, 0)", "mask_format='palette'"),
         setup=setup_rgb_masks, cli=lambda e: _train_argv(e, *_data(e))),
    Case("palette_colour_not_in_palette",
         lambda e: load_mask(_data(e)[1] / "0.png", "palette",
                             palette=[(0, 0, 0), (255, 0, 0)]), DataError,
         ("{tmp}/d/masks/0.png", "colour (9, 9, 9)", "row 10, col 20", "not in the palette",
          "(255, 0, 0)"),
         setup=setup_palette_unknown,
         cli=lambda e: _train_argv(e, *_data(e), "--mask-format", "palette",
                                   "--palette", "[[0,0,0],[255,0,0]]")),
    Case("palette_format_without_palette",
         lambda e: load_mask(_data(e)[1] / "0.png", "palette"), ArgumentError,
         ("mask_format='palette' needs palette=",),
         setup=setup_palette_unknown,
         cli=lambda e: _train_argv(e, *_data(e), "--mask-format", "palette")),
    Case("mask_channel_out_of_range",
         lambda e: load_mask(_data(e)[1] / "0.png", "channel", mask_channel=5), DataError,
         ("{tmp}/d/masks/0.png", "mask_channel=5", "0..2"),
         setup=setup_rgb_masks,
         cli=lambda e: _train_argv(e, *_data(e), "--mask-format", "channel",
                                   "--mask-channel", "5")),
    Case("unknown_mask_format",
         lambda e: load_mask(REPO / "nothing.png", "rgb"), ArgumentError,
         ("mask_format must be one of", "'rgb'", "'palette'"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d"), "--mask-format", "rgb"),
         cli_fragments=("--mask-format", "'rgb'", "index")),
    # ---- arrays given to predict
    Case("nan_in_array_passed_to_predict",
         lambda e: predict_on(e, nan_image()), PredictionError,
         ("1 non-finite value(s) (1 NaN, 0 inf)", "index (5, 6, 1)")),
    Case("inf_in_array_passed_to_predict",
         lambda e: predict_on(e, inf_image()), PredictionError,
         ("(0 NaN, 1 inf)", "index (7, 8, 2)")),
    Case("batch_of_mixed_sizes_to_predict",
         lambda e: predict_on(e, np.array([np.zeros((40, 40, 3)), np.zeros((48, 40, 3))],
                                          dtype=object)), PredictionError,
         ("ragged/object array", "(2,)", "as a list")),
    Case("batch_of_mixed_sizes_in_dataset",
         lambda e: make_dataset(*_data(e), num_classes=2, batch_size=2), DataError,
         ("different sizes", "is 64x64", "is 96x64", "size= or crop=", "batch_size=1"),
         setup=setup_mixed_sizes, cli=lambda e: _train_argv(e, *_data(e))),
    Case("wrong_channel_count_to_predict",
         lambda e: predict_on(e, np.zeros((40, 40, 4), np.float32)), PredictionError,
         ("4 channels", "expects 3")),
    # ---- writing
    Case("unwritable_output_folder",
         lambda e: save_mask_png(np.zeros((4, 4), np.int32), e.tmp / "blocker" / "o" / "m.png"),
         OutputError, ("cannot create the output folder", "{tmp}/blocker/o"),
         setup=setup_unwritable_output,
         cli=lambda e: ["predict", "--model", str(e.shared.model_path), "--input",
                        str(e.tmp / "in"), "--out", str(e.tmp / "blocker" / "o")]),
    Case("unwritable_output_folder_predict_folder",
         lambda e: predict_folder(load_model(e.shared.model_path, compile=False), e.tmp / "in",
                                  e.tmp / "blocker" / "o"), OutputError,
         ("cannot create the output folder", "{tmp}/blocker/o"), setup=setup_unwritable_output),
    Case("disk_full_while_writing_checkpoint", disk_full_during_checkpoint, CheckpointError,
         ("cannot write checkpoint", "{tmp}/run/checkpoints/last.keras", "No space left on device",
          "is kept"),
         cli=disk_full_cli,
         cli_fragments=("cannot write checkpoint", "{tmp}/out/checkpoints/last.keras",
                        "No space left on device")),
    Case("resume_with_checkpoint_of_another_model", resume_other_model, ArgumentError,
         ("Cannot resume from checkpoint", "run/checkpoints/last.keras", "different model",
          "decoder_stage1"),
         cli=resume_other_model_cli),
    # ---- command-line flag values (the API row checks the flag's parser)
    Case("negative_epochs",
         lambda e: positive_int("-1"), argparse.ArgumentTypeError,
         ("expected a positive integer", "-1"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d"), "--epochs", "-1"),
         cli_fragments=("--epochs", "-1")),
    Case("input_size_0x0",
         lambda e: parse_size("0x0"), argparse.ArgumentTypeError,
         ("two positive integers", "'0x0'"),
         cli=lambda e: ["inspect", "--input-size", "0x0"],
         cli_fragments=("--input-size", "'0x0'")),
    Case("crop_not_a_size",
         lambda e: parse_size("32by32"), argparse.ArgumentTypeError,
         ("must look like 224x224", "'32by32'"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d"), "--crop", "32by32"),
         cli_fragments=("--crop", "'32by32'")),
    Case("batch_size_zero",
         lambda e: make_dataset(*pair_set(e.tmp / "d"), num_classes=2, batch_size=0),
         ArgumentError, ("batch_size must be >= 1", "0"),
         cli=lambda e: _train_argv(e, *pair_set(e.tmp / "d"), "--batch-size", "0"),
         cli_fragments=("--batch-size", "0")),
]

CLI_CASES = [c for c in CASES if c.cli is not None]


def _fragments(case: Case, fragments: tuple[str, ...], env: Env) -> list[str]:
    return [f.replace("{tmp}", str(env.tmp)) for f in fragments]


@pytest.fixture()
def env(tmp_path, shared, monkeypatch) -> Env:
    return Env(tmp_path, shared, monkeypatch)


def test_table_is_large_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CLI_CASES) >= 25
    for case in CASES:
        assert case.error is not None or case.note, case.id  # a load row states its decision


def check_api_case(case: Case, env: Env) -> None:
    """Runs a row through the Python API (the rule: module docstring)."""
    if case.setup:
        case.setup(env)
    if case.error is None:
        case.api(env)  # a correct load: the row's function asserts the values
        return
    with pytest.raises(BaseException) as info:
        case.api(env)
    assert type(info.value) is case.error, (
        f"{case.id}: expected {case.error.__name__}, got {type(info.value).__name__}: "
        f"{info.value}")
    message = str(info.value)
    for fragment in _fragments(case, case.fragments, env):
        assert fragment in message, f"{case.id}: {fragment!r} not in {message!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api(case: Case, env: Env):
    check_api_case(case, env)


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    from vggunet.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, fragments: list[str], command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not _TF_NOISE.match(ln)]
    assert code == 2, f"exit {code}, stderr: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"vggunet {command}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def check_cli_case(case: Case, env: Env, capsys) -> None:
    """Runs a row's command line in-process (the rule: module docstring)."""
    if case.setup:
        case.setup(env)
    argv = case.cli(env)
    code, err = run_main(argv, capsys)
    assert_one_line_error(code, err,
                          _fragments(case, case.cli_fragments or case.fragments, env), argv[0])


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli(case: Case, env: Env, capsys):
    check_cli_case(case, env, capsys)


# A usage error found before TensorFlow loads and one found after it. A missing data folder as
# a real process (`train`, after TensorFlow's start-up) is
# tests/test_cli.py::test_missing_data_folder_is_one_line_without_traceback.
SUBPROCESS_CASES = ["model_file_corrupt", "unknown_backbone"]


def test_cli_subprocess(tmp_path, shared):
    """Two rows as real `python -m vggunet` processes, run side by side."""
    by_id = {c.id: c for c in CASES}
    procs = []
    for case_id in SUBPROCESS_CASES:
        env = Env(tmp_path / case_id, shared, None)
        env.tmp.mkdir()
        case = by_id[case_id]
        if case.setup:
            case.setup(env)
        argv = case.cli(env)
        process_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                           PYTHONWARNINGS="ignore")
        procs.append((case, env, argv, subprocess.Popen(
            [sys.executable, "-m", "vggunet", *argv], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=process_env)))
    for case, env, argv, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert_one_line_error(proc.returncode, err,
                              _fragments(case, case.cli_fragments or case.fragments, env),
                              argv[0])
