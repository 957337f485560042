"""build_vgg_unet / build_encoder_unet: shapes, graph, options, errors, save/load."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest

import vggunet as vu
from conftest import forward, input_sources, random_images

SIZES = [(64, 64), (96, 160), (200, 300)]

# Parameter counts and a digest of the layer names of the models below, as the release before
# the 40-backbone registry built them: adding backbones must not change these models.
RELEASED = {
    "vgg16": (41962564, "ed915f500a0d31d9"),
    "vgg19": (47272260, "06d0d697e5c4e209"),
    "resnet50": (67276932, "ea1f0052e1026945"),
    "resnet101": (86347266, "7e369056113a94f0"),
    "resnet152": (102060034, "a1f762d9d78910a9"),
}


def _assert_as_released(model: keras.Model, backbone: str) -> None:
    names = ",".join(layer.name for layer in model.layers)
    digest = hashlib.sha1(names.encode()).hexdigest()[:16]
    assert (model.count_params(), digest) == RELEASED[backbone]


@pytest.mark.parametrize("backbone", ["vgg16", "vgg19", "resnet50"])
def test_any_input_size_keeps_hw_and_softmax_sums_to_one(backbone, rng):
    model = vu.build_vgg_unet(backbone, num_classes=4, weights=None)
    _assert_as_released(model, backbone)
    for height, width in SIZES:
        out = forward(model, random_images(rng, 2, height, width))
        assert out.shape == (2, height, width, 4)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backbone", ["resnet101", "resnet152"])
def test_deep_resnets_build_and_run(backbone, rng):
    model = vu.build_vgg_unet(backbone, input_shape=(64, 64, 3), num_classes=2, weights=None)
    _assert_as_released(model, backbone)
    assert forward(model, random_images(rng, 1, 64, 64)).shape == (1, 64, 64, 2)


def _concat_sources(model: keras.Model, concat_name: str) -> list[str]:
    return input_sources(model, concat_name)


def test_vgg16_default_skips_feed_the_decoder_in_the_graph(vgg_unet):
    for stage, block in zip(range(1, 6), range(5, 0, -1)):
        sources = _concat_sources(vgg_unet, f"decoder_stage{stage}_concat")
        assert sources == [f"decoder_stage{stage}_upconv", f"block{block}_conv2"]
    assert vu.inspect.skip_layer_names(vgg_unet) == [f"block{i}_conv2" for i in range(1, 6)]
    for name in ("bottleneck_conv1", "bottleneck_conv2"):
        layer = vgg_unet.get_layer(name)
        assert layer.filters == 1024 and layer.kernel_size == (3, 3)
    # The bottleneck pools block5_conv3 (1/16) once more, to 1/32.
    pool = vgg_unet.get_layer("bottleneck_pool")
    assert input_sources(vgg_unet, pool.name) == ["block5_conv3"]


def test_decoder_stage_layout_and_default_filters(vgg_unet):
    classes = [vgg_unet.get_layer(f"decoder_stage1_{s}").__class__.__name__
               for s in ("up", "upconv", "concat", "conv1", "conv2")]
    assert classes == ["UpSampling2D", "Conv2D", "Concatenate", "Conv2D", "Conv2D"]
    assert vgg_unet.get_layer("decoder_stage1_upconv").kernel_size == (2, 2)
    filters = [vgg_unet.get_layer(f"decoder_stage{i}_conv2").filters for i in range(1, 6)]
    assert filters == [512, 256, 128, 64, 64]
    assert vgg_unet.get_layer("head_conv").kernel_size == (1, 1)


def test_resnet50_skips_and_last_stage_without_skip():
    model = vu.build_vgg_unet("resnet50", input_shape=(64, 64, 3), weights=None)
    assert vu.inspect.skip_layer_names(model) == [
        "conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"]
    assert "decoder_stage5_concat" not in [l.name for l in model.layers]
    assert "bottleneck_pool" not in [l.name for l in model.layers]  # conv5 is already at 1/32


def test_fixed_input_shape_multiple_of_32_has_no_pad_layers():
    model = vu.build_vgg_unet(input_shape=(64, 96, 3), weights=None)
    names = [l.name for l in model.layers]
    assert "input_pad" not in names and "head_crop" not in names
    assert tuple(model.output.shape) == (None, 64, 96, 2)


def test_fixed_input_shape_not_multiple_of_32_pads_and_crops(rng):
    model = vu.build_vgg_unet(input_shape=(200, 300, 3), weights=None)
    assert tuple(model.output.shape) == (None, 200, 300, 2)
    assert forward(model, random_images(rng, 1, 200, 300)).shape == (1, 200, 300, 2)


def test_transpose_decoder_and_batchnorm(rng):
    model = vu.build_vgg_unet(input_shape=(64, 64, 3), weights=None, decoder="transpose",
                              decoder_batchnorm=True, decoder_filters=(64, 32, 32, 16, 16))
    up = model.get_layer("decoder_stage1_up")
    assert isinstance(up, keras.layers.Conv2DTranspose)
    assert up.kernel_size == (3, 3) and up.strides == (2, 2)
    assert isinstance(model.get_layer("decoder_stage1_conv1_bn"), keras.layers.BatchNormalization)
    assert isinstance(model.get_layer("bottleneck_conv1_bn"), keras.layers.BatchNormalization)
    assert forward(model, random_images(rng, 1, 64, 64)).shape == (1, 64, 64, 2)


def test_head_activations(rng):
    x = random_images(rng, 1, 64, 64)
    logits = vu.build_vgg_unet(input_shape=(64, 64, 3), num_classes=3, weights=None,
                               activation=None).predict(x, verbose=0)
    assert logits.min() < 0 or logits.max() > 1 or not np.allclose(logits.sum(-1), 1)
    sig = vu.build_vgg_unet(input_shape=(64, 64, 3), num_classes=1, weights=None)
    assert sig.get_layer("head_activation").activation.__name__ == "sigmoid"
    out = forward(sig, x)
    assert out.shape == (1, 64, 64, 1) and 0 <= out.min() and out.max() <= 1


def test_mixed_precision_computes_bf16_outputs_float32(rng):
    model = vu.build_vgg_unet(input_shape=(64, 64, 3), weights=None, precision="mixed_bfloat16")
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("block1_conv1").kernel.dtype == "float32"
    assert model.get_layer("input_preprocess").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    out = forward(model, random_images(rng, 1, 64, 64))
    assert out.dtype == np.float32
    # The global policy is restored after building.
    assert keras.config.dtype_policy().name == "float32"


def test_float32_precision_everywhere():
    model = vu.build_vgg_unet(input_shape=(64, 64, 3), weights=None, precision="float32")
    assert {l.compute_dtype for l in model.layers if l.weights} == {"float32"}


def test_grayscale_input_is_repeated_to_rgb(rng):
    model = vu.build_vgg_unet(input_shape=(None, None, 1), weights=None)
    assert model.get_layer("block1_conv1").kernel.shape == (3, 3, 3, 64)
    grey = random_images(rng, 1, 64, 64, channels=1)
    rgb = np.repeat(grey, 3, axis=-1)
    encoder = keras.Model(model.inputs, model.get_layer("input_preprocess").output)
    np.testing.assert_allclose(forward(encoder, grey),
                               keras.applications.vgg16.preprocess_input(rgb.copy()), atol=1e-4)


def test_four_channels_without_weights_trains_first_conv_from_scratch(rng):
    model = vu.build_vgg_unet(input_shape=(64, 64, 4), weights=None)
    assert model.get_layer("block1_conv1").kernel.shape == (3, 3, 4, 64)
    assert forward(model, random_images(rng, 1, 64, 64, 4)).shape == (1, 64, 64, 2)


def test_custom_skip_layers_override(rng):
    model = vu.build_vgg_unet(input_shape=(64, 64, 3), weights=None,
                              skip_layers=["block1_conv1", "block3_conv3"])
    assert vu.inspect.skip_layer_names(model) == ["block1_conv1", "block3_conv3"]
    assert forward(model, random_images(rng, 1, 64, 64)).shape == (1, 64, 64, 2)


@pytest.mark.parametrize(
    "kwargs, exc, needles",
    [
        (dict(backbone="vgg17"), ValueError, ["vgg17", "vgg16", "resnet50"]),
        (dict(skip_layers=["block1_conv2", "block9_conv1"]), ValueError,
         ["block9_conv1", "block5_conv3"]),
        (dict(skip_layers=["block3_conv2", "block1_conv2"]), ValueError, ["high to low"]),
        (dict(num_classes=0), ValueError, ["num_classes", "0"]),
        (dict(num_classes=-2), ValueError, ["num_classes", "-2"]),
        (dict(input_shape=(16, 64, 3)), ValueError, ["height", "16", "32"]),
        # Any known channel count takes pretrained weights (issue 16); an unknown one cannot.
        (dict(input_shape=(64, 64, None), weights="imagenet"), ValueError,
         ["known number of input channels", "(64, 64, None)"]),
        (dict(decoder="deconv"), ValueError, ["deconv", "upsampling"]),
        (dict(activation="relu"), ValueError, ["relu", "softmax"]),
        (dict(decoder_filters=()), ValueError, ["decoder_filters"]),
        (dict(skip_layers="block1_conv2"), ValueError, ["list"]),
        (dict(precision="fp8"), ValueError, ["fp8", "mixed_bfloat16"]),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, exc, needles):
    kwargs = {"weights": None, **kwargs}
    with pytest.raises(exc) as info:
        vu.build_vgg_unet(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


def test_save_load_round_trip_safe_mode_identical(tmp_path, vgg_unet, rng):
    path = tmp_path / "unet.keras"
    vgg_unet.save(path)
    loaded = keras.models.load_model(path)  # safe_mode on, no custom_objects
    x = random_images(rng, 1, 96, 160)
    np.testing.assert_array_equal(forward(loaded, x), forward(vgg_unet, x))
    assert [l.name for l in loaded.layers] == [l.name for l in vgg_unet.layers]


def test_build_encoder_unet_is_the_same_builder():
    assert vu.build_encoder_unet is vu.build_vgg_unet


def test_skip_batchnorm_standardises_skips_keeps_roles_and_trains_with_frozen_encoder(rng):
    from vggunet.inspect import layer_roles

    model = vu.build_vgg_unet("vgg16", input_shape=(64, 64, 1), num_classes=2, weights=None,
                              decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                              skip_batchnorm=True, precision="float32")
    bns = [f"decoder_stage{s}_skip_bn" for s in range(1, 6)] + ["bottleneck_input_bn"]
    for name in bns:
        assert isinstance(model.get_layer(name), keras.layers.BatchNormalization)
    concat = model.get_layer("decoder_stage5_concat")  # full resolution: block1_conv2's skip
    assert input_sources(model, concat.name)[1] == "decoder_stage5_skip_bn"
    roles = layer_roles(model)
    assert [n for n, r in roles.items() if r == "skip"] == [f"block{i}_conv2" for i in range(1, 6)]
    vu.freeze(model, "encoder")
    assert all(model.get_layer(name).trainable for name in bns)  # decoder-side: they train
    # In training mode each skip channel comes out with batch mean 0 and variance 1, whatever
    # the encoder's scale (here a random encoder on raw pixels): var / (var + epsilon) exactly,
    # which is 1 but for channels whose variance is not large against BatchNorm's epsilon
    # (a random encoder has some; which ones depends on the random state other tests leave).
    x = random_images(rng, 2, 64, 64, 1)
    probe = keras.Model(model.input, [model.get_layer("decoder_stage5_skip_bn").output,
                                      model.get_layer("block1_conv2").output])
    normed, raw = (np.asarray(t) for t in probe(x, training=True))
    live = raw.reshape(-1, raw.shape[-1]).std(0) > 1e-3
    flat = normed.reshape(-1, normed.shape[-1])[:, live]
    flat_raw = raw.reshape(-1, raw.shape[-1])[:, live]
    epsilon = model.get_layer("decoder_stage5_skip_bn").epsilon
    np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(flat.std(0), flat_raw.std(0) / np.sqrt(flat_raw.var(0) + epsilon),
                               atol=2e-2)
    assert np.all(np.abs(flat.std(0)[flat_raw.std(0) > 1.0] - 1.0) < 2e-2)
    plain = vu.build_vgg_unet("vgg16", input_shape=(64, 64, 1), num_classes=2, weights=None,
                              decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                              precision="float32")
    assert not any(layer.name.endswith("_skip_bn") for layer in plain.layers)  # default off
