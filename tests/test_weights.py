"""Backbone weights: from a Keras 3 or legacy file, mismatches, corrupt files, offline ImageNet,
and matching in the backbone's own numbering (layer names Keras makes up differ per session)."""

from __future__ import annotations

import time

import h5py
import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.models.registry import EncoderSpec, KerasFunction
from vggunet.models.weights import BackboneWeights, read_backbone_weights
from vggunet.weights import ImagenetWeightsUnavailable, WeightsError


def _random_backbone(ctor, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return ctor(include_top=False, weights=None, input_shape=(None, None, 3))


def _write_legacy_h5(model: keras.Model, path) -> None:
    """Writes weights in the Keras 2 layout of keras.applications' *_notop.h5 files: a layer's
    trainable weights, then the others (Keras 2's `layer.weights` order)."""
    with h5py.File(path, "w") as f:
        names = [l.name for l in model.layers]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for layer in model.layers:
            g = f.create_group(layer.name)
            variables = [*layer.trainable_weights, *layer.non_trainable_weights]
            weight_names = [f"{layer.name}/{w.path}:{i}".encode() for i, w in enumerate(variables)]
            g.attrs["weight_names"] = weight_names
            for wn, variable in zip(weight_names, variables):
                g.create_dataset(wn.decode(), data=keras.ops.convert_to_numpy(variable))


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


@pytest.fixture(scope="module")
def resnet50_source():
    """A random ResNet50, built once: two tests write it to files of their own."""
    return _random_backbone(keras.applications.ResNet50, 7)


def test_resnet50_weights_file_including_batchnorm(tmp_path, resnet50_source):
    path = tmp_path / "r50.weights.h5"
    resnet50_source.save_weights(path)
    # A narrow decoder: the test is about the encoder's arrays.
    model = vu.build_vgg_unet("resnet50", weights=path, input_shape=(64, 64, 3),
                              decoder_filters=(8,) * 5, bottleneck_filters=8)
    _assert_encoder_equals(model, resnet50_source)


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


def test_legacy_file_with_wrong_shapes_names_first_mismatching_layer(tmp_path, resnet50_source):
    path = tmp_path / "resnet50_notop.h5"
    _write_legacy_h5(resnet50_source, path)
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


# ---- the backbone's own numbering: names Keras makes up, other builds, nested models ----------

def _backbone_weighted(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's backbone layers with weights, in the backbone's order."""
    layers = [model.get_layer(name) for name in model.backbone_layers[1:]]
    return [layer for layer in layers if layer.weights]


def _assert_loaded_in_order(model: keras.Model, source: keras.Model) -> None:
    ours = _backbone_weighted(model)
    theirs = [layer for layer in source.layers if layer.weights][:len(ours)]
    assert ours and len(theirs) == len(ours)
    for mine, original in zip(ours, theirs):
        assert mine.__class__ is original.__class__
        for got, want in zip(mine.get_weights(), original.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"{mine.name} <- {original.name}")


INCEPTION = EncoderSpec(
    KerasFunction("keras.applications", "InceptionV3"), ("mixed0",), "mixed2", "tf",
    KerasFunction("keras.applications.inception_v3", "preprocess_input"),
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "inceptionv3")


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """A random InceptionV3 (Keras names its layers conv2d_N, batch_normalization_N), saved both
    ways. The backbone is thus built once before the model is: the model's names differ."""
    source = _random_backbone(keras.applications.InceptionV3, 11)
    folder = tmp_path_factory.mktemp("inception")
    source.save_weights(folder / "inception.weights.h5")
    _write_legacy_h5(source, folder / "inception_notop.h5")
    return source, folder


@pytest.mark.parametrize("file_name", ["inception.weights.h5", "inception_notop.h5"])
def test_made_up_layer_names_are_matched_by_order(inception_files, file_name):
    source, folder = inception_files
    encoder = vu.build_encoder(INCEPTION, weights=folder / file_name, input_shape=(None, None, 3))
    # The names differ from the file's (Keras numbers made-up names per session) ...
    assert _backbone_weighted(encoder)[0].name != source.layers[1].name
    assert _backbone_weighted(encoder)[0].name.startswith("conv2d")
    # ... and every layer up to the bottleneck source got its own arrays.
    _assert_loaded_in_order(encoder, source)


def _toy_backbone(imagenet_file):
    """A keras.applications-like constructor: made-up names, in-model normalisation, a nested
    model holding a BatchNorm (legacy files list its weights in another order), and one more
    layer without weights when built for ImageNet, as EfficientNet's rescaling."""

    def toy(include_top=False, weights=None, input_shape=None, input_tensor=None):
        if input_tensor is None:
            inputs = x = keras.Input(input_shape or (None, None, 3))
        else:
            inputs, x = keras.utils.get_source_inputs(input_tensor)[0], input_tensor
        x = keras.layers.Normalization(axis=-1)(keras.layers.Rescaling(1 / 255)(x))
        if weights == "imagenet":
            x = keras.layers.Rescaling(2.0)(x)
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
        x = keras.Sequential([keras.layers.BatchNormalization(), keras.layers.Conv2D(4, 1)],
                             name="toy_block")(x)
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="toy_out")(x), name="toy")
        if weights == "imagenet":
            model.load_weights(imagenet_file)
        return model

    return toy


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    keras.utils.set_random_seed(5)
    constructor = _toy_backbone(folder / "toy_imagenet.weights.h5")
    source = constructor()
    for variable in source.weights:  # no zeros and ones: every array tells where it went
        variable.assign(np.random.default_rng(len(variable.path)).normal(
            1.0, 0.3, variable.shape).astype(variable.dtype))
    source.save_weights(folder / "toy_imagenet.weights.h5")
    _write_legacy_h5(source, folder / "toy_notop.h5")
    spec = EncoderSpec(constructor, (), "toy_out", "none", constructor, "https://x/toy_notop.h5",
                       "toy")
    return spec, source, folder


@pytest.mark.parametrize("weights", ["imagenet", "toy_imagenet.weights.h5", "toy_notop.h5"])
def test_imagenet_build_and_nested_models_load_by_order(toy, weights):
    spec, source, folder = toy
    path = weights if weights == "imagenet" else folder / weights
    encoder = vu.build_encoder(spec, (), weights=path, bottleneck_source="toy_out",
                               input_shape=(None, None, 3))
    _assert_loaded_in_order(encoder, source)
    block = encoder.get_layer("toy_block")
    # The nested BatchNorm's moving statistics went to the statistics, not to gamma/beta.
    np.testing.assert_array_equal(block.layers[0].moving_variance.numpy(),
                                  source.get_layer("toy_block").layers[0].moving_variance.numpy())


def test_backbone_weights_are_read_once_and_reused(toy):
    spec, source, folder = toy
    weights = read_backbone_weights(folder / "toy_notop.h5", spec)
    assert isinstance(weights, BackboneWeights) and weights.source.endswith("toy_notop.h5")
    assert weights.classes == ("Normalization", "Conv2D", "Sequential", "Conv2D")
    assert list(weights.as_dict()) == list(weights.names)
    for _ in range(2):
        encoder = vu.build_encoder(spec, (), bottleneck_source="toy_out",
                                   input_shape=(None, None, 3))
        assert vu.load_backbone_weights(encoder, spec, weights) == 4
        _assert_loaded_in_order(encoder, source)


def test_model_cut_before_the_end_gets_the_layers_it_has(tmp_path, vgg16_source):
    path = tmp_path / "v.weights.h5"
    vgg16_source.save_weights(path)
    model = vu.build_vgg_unet("vgg16", input_shape=(64, 64, 3), weights=path,
                              skip_layers=["block1_conv2", "block2_conv2"],
                              bottleneck_source="block2_pool", decoder_filters=(8, 8),
                              bottleneck_filters=8)
    assert "block3_conv1" not in [layer.name for layer in model.layers]
    _assert_loaded_in_order(model, vgg16_source)


def test_weights_of_another_backbone_name_the_layers_that_meet(tmp_path, vgg16_source):
    path = tmp_path / "vgg19.weights.h5"
    _random_backbone(keras.applications.VGG19, 3).save_weights(path)
    model = vu.build_encoder("vgg16", weights=None, input_shape=(64, 64, 3))
    with pytest.raises(WeightsError) as info:
        vu.load_backbone_weights(model, "vgg19", path)
    message = str(info.value)
    assert str(path) in message and "'vgg19'" in message and model.name in message
    assert "'block3_conv4'" in message and "'block4_conv1'" in message
    # Nothing was assigned before the check failed.
    np.testing.assert_array_equal(model.get_layer("block1_conv2").get_weights()[1],
                                  np.zeros(64, "float32"))
