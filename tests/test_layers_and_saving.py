"""Custom layers (serializable, backend-neutral) and vggunet's safe loader."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import vggunet as vu
from conftest import forward, shallow_unet


def test_pad_and_crop_round_trip():
    x = np.arange(2 * 33 * 70 * 1, dtype="float32").reshape(2, 33, 70, 1)
    padded = vu.PadToMultiple(32)(x)
    assert tuple(padded.shape) == (2, 64, 96, 1)
    np.testing.assert_array_equal(np.asarray(padded)[:, :33, :70], x)
    # Reflection: row 33 mirrors row 31.
    np.testing.assert_array_equal(np.asarray(padded)[:, 33, :70], x[:, 31])
    cropped = vu.CropToReference()([padded, x])
    np.testing.assert_array_equal(np.asarray(cropped), x)


@pytest.mark.parametrize("layer", [vu.PadToMultiple(16, "constant"), vu.BackbonePreprocess("tf")])
def test_custom_layers_serialize(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)


def test_bad_custom_layer_arguments():
    with pytest.raises(ValueError, match="'sobel'"):
        vu.BackbonePreprocess("sobel")
    with pytest.raises(ValueError, match="0"):
        vu.PadToMultiple(0)
    # Any channel count is preprocessed (statistics cycled, issue 16); an unknown one is not.
    with pytest.raises(ValueError, match="known channel count"):
        vu.BackbonePreprocess("caffe").build((None, 8, 8, None))


def test_no_lambda_layers_anywhere(vgg_unet):
    for model in (vgg_unet, vu.build_unet(), vu.build_unet_3d()):
        assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)


def test_load_model_refuses_lambda_layer_file(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(vu.UnsafeModelError, match="lambda.keras"):
        vu.load_model(path)


def test_save_model_is_atomic_and_load_model_round_trips(tmp_path):
    # The 2-block U-Net has every custom layer; the full VGG16 U-Net has 140 times the weights.
    model = shallow_unet()
    path = vu.save_model(model, tmp_path / "sub" / "m.keras")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["m.keras"]  # no temp file left
    loaded = vu.load_model(path, compile=False)
    x = np.random.default_rng(0).random((1, 64, 64, 3)).astype("float32") * 255
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        vu.load_model(tmp_path / "missing.keras")
    other = tmp_path / "weights.h5"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .keras"):
        vu.load_model(other)


def test_precision_resolution():
    assert vu.resolve_precision("float32") == "float32"
    assert vu.resolve_precision("auto") in ("float32", "mixed_bfloat16")
    with pytest.raises(ValueError, match="'half'"):
        vu.resolve_precision("half")
