"""The lab reference models: 2D U-Net (8,640,471 params) and 3D U-Net (833,507 params)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import vggunet as vu
from conftest import forward

# The Coursera 2D U-Net lab's summary: (class, output shape, params) per layer.
LAB_2D_SUMMARY = [
    ("InputLayer", (None, 96, 128, 3), 0),
    ("Conv2D", (None, 96, 128, 32), 896), ("Conv2D", (None, 96, 128, 32), 9248),
    ("MaxPooling2D", (None, 48, 64, 32), 0),
    ("Conv2D", (None, 48, 64, 64), 18496), ("Conv2D", (None, 48, 64, 64), 36928),
    ("MaxPooling2D", (None, 24, 32, 64), 0),
    ("Conv2D", (None, 24, 32, 128), 73856), ("Conv2D", (None, 24, 32, 128), 147584),
    ("MaxPooling2D", (None, 12, 16, 128), 0),
    ("Conv2D", (None, 12, 16, 256), 295168), ("Conv2D", (None, 12, 16, 256), 590080),
    ("Dropout", (None, 12, 16, 256), 0), ("MaxPooling2D", (None, 6, 8, 256), 0),
    ("Conv2D", (None, 6, 8, 512), 1180160), ("Conv2D", (None, 6, 8, 512), 2359808),
    ("Dropout", (None, 6, 8, 512), 0),
    ("Conv2DTranspose", (None, 12, 16, 256), 1179904), ("Concatenate", (None, 12, 16, 512), 0),
    ("Conv2D", (None, 12, 16, 256), 1179904), ("Conv2D", (None, 12, 16, 256), 590080),
    ("Conv2DTranspose", (None, 24, 32, 128), 295040), ("Concatenate", (None, 24, 32, 256), 0),
    ("Conv2D", (None, 24, 32, 128), 295040), ("Conv2D", (None, 24, 32, 128), 147584),
    ("Conv2DTranspose", (None, 48, 64, 64), 73792), ("Concatenate", (None, 48, 64, 128), 0),
    ("Conv2D", (None, 48, 64, 64), 73792), ("Conv2D", (None, 48, 64, 64), 36928),
    ("Conv2DTranspose", (None, 96, 128, 32), 18464), ("Concatenate", (None, 96, 128, 64), 0),
    ("Conv2D", (None, 96, 128, 32), 18464), ("Conv2D", (None, 96, 128, 32), 9248),
    ("Conv2D", (None, 96, 128, 32), 9248), ("Conv2D", (None, 96, 128, 23), 759),
]


def test_unet_2d_exact_parameter_count_and_lab_summary():
    model = vu.build_unet()
    assert model.count_params() == 8_640_471
    summary = [(l.__class__.__name__, tuple(l.output.shape), l.count_params())
               for l in model.layers]
    assert summary == LAB_2D_SUMMARY
    assert model.get_layer("encoder_block4_dropout").rate == 0.3
    assert model.get_layer("bottleneck_dropout").rate == 0.3
    conv = model.get_layer("encoder_block1_conv1")
    assert conv.kernel_initializer.__class__.__name__ == "HeNormal"
    up = model.get_layer("decoder_block1_up")
    assert up.kernel_size == (3, 3) and up.strides == (2, 2) and up.padding == "same"


def test_conv_block_and_upsampling_block_are_public_and_match_the_lab():
    inputs = keras.Input((32, 32, 3))
    next_layer, skip = vu.conv_block(inputs, 8, dropout_prob=0.3)
    assert tuple(next_layer.shape) == (None, 16, 16, 8)
    assert tuple(skip.shape) == (None, 32, 32, 8)
    no_pool, skip2 = vu.conv_block(inputs, 8, max_pooling=False)
    assert no_pool is skip2
    up = vu.upsampling_block(next_layer, skip, 4)
    assert tuple(up.shape) == (None, 32, 32, 4)


def test_unet_2d_rejects_size_not_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        vu.build_unet(input_size=(100, 128, 3))


def test_unet_3d_exact_parameter_count_shape_and_cpu_predict_channels_first():
    model = vu.build_unet_3d(input_shape=(4, 160, 160, 16), depth=2, base_filters=32,
                             n_classes=3, data_format="channels_first",
                             final_activation="sigmoid")
    assert model.count_params() == 833_507
    assert tuple(model.output.shape) == (None, 3, 160, 160, 16)
    # The same network on a 32x32x16 patch (a 25th of the lab's voxels): the lab's call, on a
    # CPU whose TensorFlow has no channels-first 3D kernels.
    small = vu.build_unet_3d(input_shape=(4, 32, 32, 16), depth=2, base_filters=32,
                             n_classes=3, data_format="channels_first",
                             final_activation="sigmoid")
    assert small.count_params() == 833_507
    x = np.random.default_rng(0).random((1, 4, 32, 32, 16)).astype("float32")
    y = small.predict(x, verbose=0)
    assert y.shape == (1, 3, 32, 32, 16)
    assert np.all((y >= 0) & (y <= 1))


def test_unet_3d_lab_structure_depth_2():
    model = vu.build_unet_3d()
    classes = [l.__class__.__name__ for l in model.layers]
    assert classes == [
        "InputLayer", "Conv3D", "Activation", "Conv3D", "Activation", "MaxPooling3D",
        "Conv3D", "Activation", "Conv3D", "Activation", "UpSampling3D", "Concatenate",
        "Conv3D", "Activation", "Conv3D", "Activation", "Conv3D", "Activation"]
    assert [model.get_layer(n).filters for n in
            ("encoder_level0_conv1", "encoder_level0_conv2", "bottleneck_conv1",
             "bottleneck_conv2", "decoder_level0_conv1", "decoder_level0_conv2")] == \
        [32, 64, 64, 128, 64, 64]
    assert model.get_layer("decoder_level0_concat").axis == 1


@pytest.mark.parametrize("depth", [3, 4])
def test_unet_3d_deeper(depth):
    model = vu.build_unet_3d(input_shape=(2, 16, 16, 16), depth=depth, base_filters=4)
    y = forward(model, np.zeros((1, 2, 16, 16, 16), "float32"))
    assert y.shape == (1, 3, 16, 16, 16)


def test_unet_3d_channels_last_and_batchnorm():
    model = vu.build_unet_3d(input_shape=(16, 16, 8, 2), depth=2, base_filters=4,
                             data_format="channels_last", batchnorm=True, n_classes=2)
    assert tuple(model.output.shape) == (None, 16, 16, 8, 2)
    assert any(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)
    assert forward(model, np.zeros((1, 16, 16, 8, 2), "float32")).shape == (1, 16, 16, 8, 2)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(depth=0), "depth"),
    (dict(input_shape=(4, 30, 32, 16), depth=3), "30"),
    (dict(data_format="NCDHW"), "NCDHW"),
    (dict(n_classes=0), "n_classes"),
])
def test_unet_3d_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        vu.build_unet_3d(**kwargs)


@pytest.mark.parametrize("builder", ["unet2d", "unet3d"])
def test_reference_models_save_load_identical(builder, tmp_path):
    rng = np.random.default_rng(1)
    if builder == "unet2d":
        model = vu.build_unet(input_size=(32, 48, 3), n_filters=4, n_classes=5)
        x = rng.random((2, 32, 48, 3)).astype("float32")
    else:
        model = vu.build_unet_3d(input_shape=(2, 16, 16, 8), base_filters=4)
        x = rng.random((1, 2, 16, 16, 8)).astype("float32")
    path = tmp_path / f"{builder}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))
