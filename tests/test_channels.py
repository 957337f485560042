"""Any number of input channels with pretrained weights.

The pretrained first convolution is tiled over the C input channels and scaled by 3 / C (smp's
rule), per-channel weights before it (EfficientNet's in-model Normalization) are cycled, and
so are the preprocessing statistics: an image whose channels repeat R, G, B then gives the RGB
model's first-layer response. Weights come from files the tests write (no network here).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

import vggunet as vu
from conftest import forward, random_images
from vggunet.errors import ArgumentError
from vggunet.models.registry import get_encoder_spec


def _expected_kernel(rgb_kernel: np.ndarray, channels: int) -> np.ndarray:
    """smp's rule written out: input channel c gets RGB channel c mod 3, all times 3 / C."""
    kernel = np.empty(rgb_kernel.shape[:2] + (channels, rgb_kernel.shape[3]), rgb_kernel.dtype)
    for c in range(channels):
        kernel[:, :, c] = rgb_kernel[:, :, c % 3] * 3.0 / channels
    return kernel


def test_preprocessing_cycles_the_rgb_statistics(rng):
    rgb = random_images(rng, 2, 4, 5)
    for mode in ("caffe", "torch", "tf", "unit", "none"):
        want = np.asarray(vu.BackbonePreprocess(mode)(rgb))
        got = np.asarray(vu.BackbonePreprocess(mode)(np.concatenate([rgb, rgb], -1)))
        np.testing.assert_allclose(got, np.concatenate([want, want], -1), rtol=1e-6, err_msg=mode)
    pixel = np.array([[[[10.0, 20.0, 30.0, 40.0]]]], "float32")
    caffe = [30 - 103.939, 20 - 116.779, 10 - 123.68, 40 - 103.939]  # RGB reversed, N as B
    torch = [(v / 255 - m) / s for v, m, s in zip((10, 20, 30, 40), (0.485, 0.456, 0.406, 0.485),
                                                  (0.229, 0.224, 0.225, 0.229))]
    np.testing.assert_allclose(np.asarray(vu.BackbonePreprocess("caffe")(pixel))[0, 0, 0], caffe,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vu.BackbonePreprocess("torch")(pixel))[0, 0, 0], torch,
                               rtol=1e-6)
    # Two channels: a group of fewer than three keeps its order.
    two = np.asarray(vu.BackbonePreprocess("caffe")(pixel[..., :2]))[0, 0, 0]
    np.testing.assert_allclose(two, [10 - 103.939, 20 - 116.779], rtol=1e-6)


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    keras.utils.set_random_seed(21)
    source = keras.applications.VGG16(include_top=False, weights=None)
    path = tmp_path_factory.mktemp("channels") / "vgg16.weights.h5"
    source.save_weights(path)
    return source, path


@pytest.mark.parametrize("channels", [2, 4, 6])
def test_first_kernel_is_tiled_over_the_channels_and_scaled(vgg16_file, channels, rng):
    source, path = vgg16_file
    model = vu.build_vgg_unet("vgg16", input_shape=(None, None, channels), weights=path,
                              decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                              precision="float32")
    kernel, bias = model.get_layer("block1_conv1").get_weights()
    rgb_kernel, rgb_bias = source.get_layer("block1_conv1").get_weights()
    assert kernel.shape == (3, 3, channels, 64)
    np.testing.assert_allclose(kernel, _expected_kernel(rgb_kernel, channels), rtol=1e-6)
    np.testing.assert_array_equal(bias, rgb_bias)
    np.testing.assert_array_equal(model.get_layer("block2_conv1").get_weights()[0],
                                  source.get_layer("block2_conv1").get_weights()[0])
    assert model.get_layer("input_preprocess").mode == "caffe"
    out = forward(model, random_images(rng, 1, 64, 48, channels))
    assert out.shape == (1, 64, 48, 2) and np.isfinite(out).all()


def test_only_an_unknown_channel_count_is_refused(vgg16_file):
    with pytest.raises(ArgumentError, match="known number of input channels"):
        vu.build_vgg_unet("vgg16", input_shape=(None, None, None), weights=vgg16_file[1])


# backbone, its first layer with a kernel, a layer after it (the encoder's bottleneck source).
# EfficientNetB0 without its extra ImageNet scale, so that the plain Keras backbone (built
# with weights=None, which lacks that scale) is the reference; the scale has its own test.
FAMILIES = {
    "vgg16": ("vgg16", "block1_conv1", "block1_conv2"),
    "resnet50": ("resnet50", "conv1_conv", "conv1_relu"),
    "efficientnetb0": (dataclasses.replace(get_encoder_spec("efficientnetb0"),
                                           pretrained_std_rescale=()),
                       "stem_conv", "stem_activation"),
    "convnext_tiny": ("convnext_tiny", "convnext_tiny_stem",
                      "convnext_tiny_stage_0_block_0_depthwise_conv"),
}


def _normalization(model: keras.Model) -> keras.layers.Layer | None:
    return next((l for l in model.layers if isinstance(l, keras.layers.Normalization)), None)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_rgb_twice_gives_the_rgb_first_layer_response(family, tmp_path, rng):
    backbone, first, after = FAMILIES[family]
    spec = get_encoder_spec(backbone)
    keras.utils.set_random_seed(2)
    source = spec.constructor(include_top=False, weights=None)
    norm = _normalization(source) if family == "efficientnetb0" else None
    if norm is not None:  # adapted statistics (ImageNet's in the real file) that must be cycled
        norm.set_weights([np.array([0.48, 0.46, 0.41]), np.array([0.05, 0.06, 0.07]),
                          np.array(1)])
        norm.finalize_state()  # what Keras's loader does after assigning them
    source.save_weights(tmp_path / "source.weights.h5")
    rgb = random_images(rng, 1, 64, 64)
    # The RGB response: the plain keras.applications backbone, after its preprocess_input.
    rgb_model = keras.Model(source.inputs, source.get_layer(first).output)
    preprocessed = rgb if spec.preprocessing == "none" else vu.BackbonePreprocess(
        spec.preprocessing)(rgb)
    want = forward(rgb_model, preprocessed)
    encoder = vu.build_encoder(spec, [first], weights=tmp_path / "source.weights.h5",
                               bottleneck_source=after, input_shape=(None, None, 6),
                               precision="float32")
    got = forward(encoder, np.concatenate([rgb, rgb], -1))[0]
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(encoder.get_layer(first).get_weights()[0],
                               _expected_kernel(source.get_layer(first).get_weights()[0], 6),
                               rtol=1e-6)
    if norm is not None:
        mean, variance, _ = _normalization(encoder).get_weights()
        np.testing.assert_allclose(mean, np.tile(norm.get_weights()[0], 2), rtol=1e-6)
        np.testing.assert_allclose(variance, np.tile(norm.get_weights()[1], 2), rtol=1e-6)
    if family == "convnext_tiny":
        # keras.applications drops ConvNeXt's in-model normalisation for 6 channels; the same
        # ImageNet mean/std, cycled, come first instead.
        assert _normalization(encoder) is None
        assert encoder.get_layer("input_preprocess").mode == "torch"


IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def b0_imagenet_file(tmp_path_factory):
    """EfficientNetB0 weights whose Normalization holds ImageNet's statistics, as Keras's file."""
    source = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                               input_shape=(32, 32, 3))
    _normalization(source).set_weights([IMAGENET_MEAN, IMAGENET_STD ** 2, np.array(1)])
    path = tmp_path_factory.mktemp("b0") / "b0.weights.h5"
    source.save_weights(path)
    return path


@pytest.mark.parametrize("channels", [3, 4])
def test_efficientnet_gets_keras_imagenet_normalisation(channels, b0_imagenet_file, rng):
    """Keras's ImageNet EfficientNetB0 computes ((x/255 - mean) / std) / sqrt(std) before its
    stem (an extra Rescaling only weights="imagenet" builds have); a vggunet encoder given the
    weights computes the same, statistics cycled for 4 channels."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    encoder = vu.build_encoder("efficientnetb0", weights=b0_imagenet_file,
                               input_shape=(32, 32, channels), precision="float32")
    normalised = keras.Model(encoder.inputs, _normalization(encoder).output)
    x = random_images(rng, 1, 32, 32, channels)
    cycled = np.arange(channels) % 3
    want = (x / 255 - mean[cycled]) / std[cycled] / np.sqrt(std[cycled])
    np.testing.assert_allclose(forward(normalised, x), want, rtol=1e-4, atol=1e-5)
