"""Backbone weights: from a Keras 3 or legacy file, mismatches, corrupt files, offline ImageNet."""

from __future__ import annotations

import time

import h5py
import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.weights import ImagenetWeightsUnavailable, WeightsError


def _random_backbone(ctor, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return ctor(include_top=False, weights=None, input_shape=(None, None, 3))


def _write_legacy_h5(model: keras.Model, path) -> None:
    """Writes weights in the Keras 2 layout of keras.applications' *_notop.h5 files."""
    with h5py.File(path, "w") as f:
        names = [l.name for l in model.layers]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for layer in model.layers:
            g = f.create_group(layer.name)
            weight_names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            g.attrs["weight_names"] = weight_names
            for wn, value in zip(weight_names, layer.get_weights()):
                g.create_dataset(wn.decode(), data=value)


def _assert_encoder_equals(model: keras.Model, source: keras.Model) -> None:
    compared = 0
    for layer in source.layers:
        if not layer.weights:
            continue
        for ours, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
            compared += 1
    assert compared > 0


@pytest.fixture(scope="module")
def vgg16_source():
    return _random_backbone(keras.applications.VGG16, 123)


def test_keras3_weights_file_loads_identically(tmp_path, vgg16_source):
    path = tmp_path / "vgg16_notop.weights.h5"
    vgg16_source.save_weights(path)
    model = vu.build_vgg_unet("vgg16", weights=str(path), input_shape=(64, 64, 3))
    _assert_encoder_equals(model, vgg16_source)


def test_legacy_notop_h5_loads_identically(tmp_path, vgg16_source):
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    _write_legacy_h5(vgg16_source, path)
    model = vu.build_vgg_unet("vgg16", weights=path, input_shape=(None, None, 1))
    _assert_encoder_equals(model, vgg16_source)


def test_resnet50_weights_file_including_batchnorm(tmp_path):
    source = _random_backbone(keras.applications.ResNet50, 7)
    path = tmp_path / "r50.weights.h5"
    source.save_weights(path)
    model = vu.build_vgg_unet("resnet50", weights=path, input_shape=(64, 64, 3))
    _assert_encoder_equals(model, source)


def test_build_encoder_takes_weights_too(tmp_path, vgg16_source):
    path = tmp_path / "v.weights.h5"
    vgg16_source.save_weights(path)
    encoder = vu.build_encoder("vgg16", weights=path, input_shape=(64, 64, 3))
    _assert_encoder_equals(encoder, vgg16_source)


def test_file_of_another_architecture_names_file_and_layer(tmp_path):
    path = tmp_path / "vgg19.weights.h5"
    _random_backbone(keras.applications.VGG19, 1).save_weights(path)
    with pytest.raises(WeightsError) as info:
        vu.build_vgg_unet("vgg16", weights=path, input_shape=(64, 64, 3))
    message = str(info.value)
    assert str(path) in message and "vgg16" in message
    # Keras 3 files are keyed by position; VGG19's fourth block-3 conv lands on block4_conv1.
    assert "'block4_conv1'" in message


def test_legacy_file_with_wrong_shapes_names_first_mismatching_layer(tmp_path):
    path = tmp_path / "resnet50_notop.h5"
    _write_legacy_h5(_random_backbone(keras.applications.ResNet50, 2), path)
    with pytest.raises(WeightsError) as info:
        vu.build_vgg_unet("vgg16", weights=path, input_shape=(64, 64, 3))
    assert str(path) in str(info.value) and "'block1_conv1'" in str(info.value)


def test_corrupt_and_missing_files(tmp_path):
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(WeightsError, match="corrupt.weights.h5"):
        vu.build_vgg_unet("vgg16", weights=corrupt, input_shape=(64, 64, 3))
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(WeightsError, match="not found.*nope.weights.h5"):
        vu.build_vgg_unet("vgg16", weights=missing, input_shape=(64, 64, 3))


def test_imagenet_offline_gives_how_to_message_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    start = time.monotonic()
    with pytest.raises(ImagenetWeightsUnavailable) as info:
        vu.build_vgg_unet("vgg16", weights="imagenet", input_shape=(64, 64, 3))
    assert time.monotonic() - start < 60  # no hang on a closed network
    message = str(info.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras_home" / "models") in message
    assert "weights=" in message
