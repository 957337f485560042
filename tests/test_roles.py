"""Layer roles recorded at build time: kept through save/load and copies, read by freezing.

The builders return `SegmentationModel`/`Encoder` models whose config carries `roles`; plain
Functional models (files of the previous release) get the same roles from names and graph.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.models.model import SegmentationModel
from vggunet.models.roles import infer_roles
from conftest import forward

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_86619a9"
PACKAGE = Path(vu.__file__).resolve().parent


def _small_vgg(input_shape=(64, 64, 1), **kwargs) -> keras.Model:
    return vu.build_vgg_unet("vgg16", input_shape=input_shape, weights=None,
                             decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                             precision="float32", **kwargs)


def _by_role(roles: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, role in roles.items():
        grouped.setdefault(role, []).append(name)
    return grouped


def test_vgg_unet_records_every_role():
    model = _small_vgg((48, 80, 1), skip_batchnorm=True)  # not a multiple of 32: pad, crop
    assert isinstance(model, SegmentationModel)
    roles = _by_role(model.roles)
    assert list(model.roles) == [layer.name for layer in model.layers]
    assert roles["input"] == ["input_image", "input_gray_to_rgb", "input_preprocess", "input_pad"]
    assert roles["skip"] == [f"block{i}_conv2" for i in range(1, 6)]
    assert "block5_conv3" in roles["encoder"] and "block1_pool" in roles["encoder"]
    assert roles["bottleneck"] == ["bottleneck_input_bn", "bottleneck_pool", "bottleneck_conv1",
                                   "bottleneck_conv2"]
    assert "decoder_stage5_skip_bn" in roles["decoder"]
    assert roles["head"] == ["head_conv", "head_crop", "head_activation"]
    # The record agrees with what names and graph say, and layer_roles reads the record.
    assert infer_roles(model) == model.roles == vu.layer_roles(model)


def test_roles_survive_save_load_in_safe_mode(tmp_path):
    model = _small_vgg()
    path = vu.save_model(model, tmp_path / "unet.keras")
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert config["registered_name"] == "vggunet>SegmentationModel"
    assert config["config"]["roles"] == model.roles
    loaded = keras.saving.load_model(path)  # safe mode, no custom_objects
    assert type(loaded) is SegmentationModel
    assert loaded.roles == model.roles
    assert [t.name for t in loaded.outputs] == ["head_activation"]
    x = np.random.default_rng(0).random((1, 64, 64, 1)).astype("float32") * 255
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))


def test_record_is_read_not_inferred():
    """Freezing follows the record even where names would say otherwise."""
    inputs = keras.Input((8, 8, 3), name="input_image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="block2_conv1")(x)
    outputs = keras.layers.Conv2D(2, 1, name="classifier")(x)
    model = SegmentationModel(inputs, outputs, name="custom",
                              roles={"stem": "input", "classifier": "head"})
    assert model.roles == {"input_image": "input", "stem": "input", "block2_conv1": "encoder",
                           "classifier": "head"}
    assert infer_roles(model)["classifier"] == "encoder"  # names alone would get it wrong
    vu.freeze(model, "encoder")
    assert [layer.trainable for layer in model.layers] == [True, True, False, True]
    restored = SegmentationModel.from_config(model.get_config())
    assert restored.roles == model.roles
    with pytest.raises(ValueError, match="roles must be among"):
        SegmentationModel(inputs, outputs, roles={"stem": "backbone"})


@pytest.mark.parametrize("builder", ["vgg", "lab", "lab3d", "encoder"])
def test_copies_keep_the_roles(builder):
    model = {
        "vgg": lambda: _small_vgg(skip_batchnorm=True),
        "lab": lambda: vu.build_unet(input_size=(32, 32, 3), n_filters=2),
        "lab3d": lambda: vu.build_unet_3d((1, 8, 8, 8), depth=3, base_filters=2),
        "encoder": lambda: vu.build_encoder("resnet50", input_shape=(64, 64, 3)),
    }[builder]()
    # clone_model rebuilds the graph without the config: the class infers the same roles.
    clone = keras.models.clone_model(model)
    assert type(clone) is type(model) and clone.roles == model.roles
    from_config = model.__class__.from_config(model.get_config())
    assert from_config.roles == model.roles


def test_float32_copy_of_a_mixed_precision_model_keeps_class_and_roles():
    from vggunet.export import float32_copy

    model = vu.build_vgg_unet("resnet50", input_shape=(64, 64, 3), weights=None,
                              decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                              precision="mixed_bfloat16")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    copy = float32_copy(model)
    assert type(copy) is SegmentationModel and copy.roles == model.roles
    assert copy.get_layer("conv1_conv").compute_dtype == "float32"
    assert [n for n, r in copy.roles.items() if r == "skip"] == [
        "conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"]


def test_legacy_small_unet_gets_the_roles_of_its_names_and_graph():
    """A plain Functional file written by main 86619a9: roles come from the fallback."""
    model = vu.load_model(LEGACY / "small_unet.keras")
    assert not isinstance(model, SegmentationModel)
    assert vu.layer_roles(model) == {
        "input_image": "input", "input_gray_to_rgb": "input", "input_preprocess": "input",
        "input_pad": "input", "block1_conv2": "skip", "block1_pool": "encoder",
        "bottleneck_conv1": "bottleneck", "decoder_stage1_up": "decoder",
        "decoder_stage1_upconv": "decoder", "decoder_stage1_concat": "decoder",
        "decoder_stage1_conv1": "decoder", "head_conv": "head", "head_crop": "head",
        "head_activation": "head",
    }
    assert vu.encoder_blocks(model) == [1]
    report = vu.freeze(model, "encoder")
    assert report.changed == ("block1_conv2", "block1_pool")
    assert not model.get_layer("block1_pool").trainable


def test_legacy_lab_files_have_the_roles_of_freshly_built_ones():
    lab = vu.load_model(LEGACY / "lab_unet.keras")
    fresh = vu.build_unet(input_size=(32, 32, 3), n_filters=2, n_classes=3)
    assert vu.layer_roles(lab) == fresh.roles
    lab3d = vu.load_model(LEGACY / "unet3d.keras")
    fresh3d = vu.build_unet_3d(input_shape=(4, 16, 16, 8), depth=2, base_filters=2,
                               n_classes=3)
    assert vu.layer_roles(lab3d) == fresh3d.roles
    assert _by_role(fresh3d.roles) == {
        "input": ["input_volume"],
        "encoder": ["encoder_level0_conv1", "encoder_level0_conv1_relu",
                    "encoder_level0_conv2", "encoder_level0_pool"],
        "skip": ["encoder_level0_conv2_relu"],
        "bottleneck": ["bottleneck_conv1", "bottleneck_conv1_relu", "bottleneck_conv2",
                       "bottleneck_conv2_relu"],
        "decoder": ["decoder_level0_up", "decoder_level0_concat", "decoder_level0_conv1",
                    "decoder_level0_conv1_relu", "decoder_level0_conv2",
                    "decoder_level0_conv2_relu"],
        "head": ["head_conv", "head_activation"],
    }


def test_lab_unets_have_encoder_blocks_for_freezing():
    lab = vu.build_unet(input_size=(32, 32, 3), n_filters=2)
    assert vu.encoder_blocks(lab) == [1, 2, 3, 4]
    vu.freeze(lab, up_to="block2")
    frozen = [layer.name for layer in lab.layers if not layer.trainable]
    assert frozen == [f"encoder_block{b}_{s}" for b in (1, 2) for s in ("conv1", "conv2", "pool")]
    lab3d = vu.build_unet_3d((1, 8, 8, 8), depth=3, base_filters=2)
    vu.freeze(lab3d, vu.top_blocks(lab3d, 1))
    assert {layer.name for layer in lab3d.layers if not layer.trainable} == {
        "encoder_level1_conv1", "encoder_level1_conv1_relu", "encoder_level1_conv2",
        "encoder_level1_conv2_relu", "encoder_level1_pool"}


def test_models_and_transfer_use_no_private_keras_api():
    needles = ("_inbound_nodes", "_keras_history", "keras.src", "safe_mode=False", "Lambda(")
    found = [f"{path.relative_to(PACKAGE)}: {needle}"
             for folder in ("models", "transfer") for path in (PACKAGE / folder).glob("*.py")
             for needle in needles if needle in path.read_text(encoding="utf-8")]
    assert not found


def test_plain_keras_loads_a_lab_unet_after_import_vggunet(tmp_path):
    """The lab U-Net has no custom layer: only the registered model class must be known."""
    import os
    import subprocess
    import sys

    path = vu.save_model(vu.build_unet(input_size=(32, 32, 3), n_filters=2), tmp_path / "l.keras")
    code = ("import vggunet, keras\n"
            f"m = keras.saving.load_model({str(path)!r})\n"
            "print(type(m).__name__, m.roles['encoder_block4_dropout'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SegmentationModel", "skip"]
