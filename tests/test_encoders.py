"""Encoder registry and build_encoder."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.encoders import ENCODERS, EncoderSpec, encoder_layer_names
from conftest import forward, producer, random_images


def test_vgg16_encoder_outputs_on_224():
    encoder = vu.build_encoder("vgg16", weights=None, input_shape=(224, 224, 3))
    shapes = [tuple(o.shape[1:]) for o in encoder.outputs]
    assert shapes[:5] == [(224, 224, 64), (112, 112, 128), (56, 56, 256), (28, 28, 512),
                          (14, 14, 512)]
    assert shapes[5] == (14, 14, 512)  # bottleneck source block5_conv3
    assert [producer(encoder, o) for o in encoder.outputs] == [
        "block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2",
        "block5_conv3"]
    names = [l.name for l in encoder.layers]
    assert "block5_pool" not in names and "fc1" not in names  # no dense head, truncated


def test_encoder_equals_hand_built_feature_extractor(rng):
    """build_encoder(preprocessing=False) is keras.Model(base.input, [base.get_layer(n).output])."""
    encoder = vu.build_encoder("vgg16", weights=None, input_shape=(64, 64, 3),
                               preprocessing=False, precision="float32")
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    for layer in base.layers:
        if layer.weights:
            layer.set_weights(encoder.get_layer(layer.name).get_weights())
    names = list(ENCODERS["vgg16"].skip_layers)
    by_hand = keras.Model(base.input, [base.get_layer(n).output for n in names])
    x = random_images(rng, 1, 64, 64)
    for ours, theirs in zip(forward(encoder, x), forward(by_hand, x)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


# The entries of the release before the 40-backbone registry; tests/test_backbones.py checks
# every entry's layers (names and indices) in its built U-Net.
@pytest.mark.parametrize("backbone", ["resnet101", "resnet152", "resnet50", "vgg16", "vgg19"])
def test_registry_entries_name_real_layers(backbone):
    spec = vu.get_encoder_spec(backbone)
    names = set(encoder_layer_names(backbone))
    assert set(spec.skip_layers) <= names
    assert spec.bottleneck_source in names
    assert spec.weights_file.endswith("_notop.h5")


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50"])
def test_in_model_preprocessing_equals_keras_preprocess_input(backbone, rng):
    spec = vu.get_encoder_spec(backbone)
    x = random_images(rng, 2, 32, 32)
    layer = vu.BackbonePreprocess(spec.preprocessing)
    np.testing.assert_allclose(np.asarray(layer(x)), spec.preprocess_input(x.copy()), atol=1e-4)


def test_adding_a_backbone_is_one_registry_entry(monkeypatch, rng):
    monkeypatch.setitem(ENCODERS, "vgg16_shallow", EncoderSpec(
        keras.applications.VGG16, ("block1_conv2", "block2_conv2", "block3_conv3"),
        "block4_conv3", "caffe", keras.applications.vgg16.preprocess_input,
        ENCODERS["vgg16"].weights_url))
    model = vu.build_vgg_unet("vgg16_shallow", weights=None, decoder_filters=(64, 32, 16, 16))
    out = forward(model, random_images(rng, 1, 48, 80))
    assert out.shape == (1, 48, 80, 2)


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="vgg16, vgg19, resnet50, resnet101, resnet152"):
        vu.get_encoder_spec("efficientnet")


def test_wrong_skip_layer_lists_valid_names():
    with pytest.raises(ValueError) as info:
        vu.build_encoder("vgg16", skip_layers=["block1_conv9"], input_shape=(64, 64, 3))
    assert "block1_conv9" in str(info.value) and "block1_conv2" in str(info.value)


def test_encoder_outputs_are_named_after_their_layers_also_after_save_load(tmp_path):
    encoder = vu.build_encoder("vgg16", weights=None, input_shape=(64, 64, 1),
                               precision="float32")
    expected = ["block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2",
                "block5_conv3"]
    assert [t.name for t in encoder.outputs] == encoder.output_names == expected
    assert [n for n, r in encoder.roles.items() if r == "skip"] == expected[:5]
    assert [n for n, r in encoder.roles.items() if r == "input"] == [
        "input_image", "input_gray_to_rgb", "input_preprocess"]
    path = vu.save_model(encoder, tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "Encoder"
    assert [t.name for t in loaded.outputs] == loaded.output_names == expected
    assert loaded.roles == encoder.roles
    x = random_images(np.random.default_rng(0), 1, 64, 64, channels=1)
    for ours, theirs in zip(forward(loaded, x), forward(encoder, x)):
        np.testing.assert_array_equal(ours, theirs)


def test_a_build_looks_the_backbone_up_once(monkeypatch, tmp_path):
    """build_vgg_unet resolves the name once and hands the spec to encoder and weights."""
    from vggunet.models import registry

    lookups = []

    class CountingRegistry(dict):
        def __getitem__(self, key):
            lookups.append(key)
            return super().__getitem__(key)

    path = tmp_path / "vgg16.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None).save_weights(path)
    monkeypatch.setattr(registry, "ENCODERS", CountingRegistry(registry.ENCODERS))
    model = vu.build_vgg_unet("VGG16", input_shape=(64, 64, 3), weights=path,
                              decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8)
    assert lookups == ["vgg16"]
    assert model.name == "vgg16_unet"
    assert vu.get_encoder_spec(vu.get_encoder_spec("vgg16")).name == "vgg16"


def test_spec_without_a_name_gets_its_registry_key(monkeypatch):
    spec = ENCODERS["vgg16"]
    unnamed = EncoderSpec(spec.constructor, spec.skip_layers, spec.bottleneck_source,
                          spec.preprocessing, spec.preprocess_input, spec.weights_url)
    monkeypatch.setitem(ENCODERS, "my_vgg", unnamed)
    assert vu.get_encoder_spec("My_VGG").name == "my_vgg"
    encoder = vu.build_encoder("my_vgg", input_shape=(64, 64, 3))
    assert encoder.name == "my_vgg_encoder"
