"""3D U-Net presets ("lecture" depth 2, "assignment" depth 4) and the `precision` argument."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from vggunet.errors import ArgumentError
from vggunet.models.precision import resolve_precision
from vggunet.models.unet3d import UNET3D_PRESETS, build_unet_3d
from conftest import forward


def expected_params(depth: int, base: int, channels: int, classes: int) -> int:
    """The lab's unet_model_3d parameter count, layer by layer: a 3x3x3 conv from `cin` to
    `cout` channels has (27 * cin + 1) * cout parameters, the 1x1x1 head (cin + 1) * classes."""
    def conv(cin: int, cout: int, kernel: int = 27) -> int:
        return (kernel * cin + 1) * cout

    total, cin, skips = 0, channels, []
    for level in range(depth):
        filters = base * 2 ** level
        total += conv(cin, filters) + conv(filters, 2 * filters)
        cin = 2 * filters
        if level < depth - 1:
            skips.append(cin)
    for skip in reversed(skips):
        total += conv(cin + skip, skip) + conv(skip, skip)
        cin = skip
    return total + conv(cin, classes, kernel=1)


def test_preset_table():
    assert {name: dict(values) for name, values in UNET3D_PRESETS.items()} == {
        "lecture": {"depth": 2, "base_filters": 32},
        "assignment": {"depth": 4, "base_filters": 32},
    }
    with pytest.raises(TypeError):  # read-only: nobody changes the builder's defaults by accident
        UNET3D_PRESETS["lecture"]["depth"] = 3  # type: ignore[index]


@pytest.mark.parametrize("preset, params", [("lecture", 833_507), ("assignment", 16_318_307)])
def test_preset_parameter_counts_on_the_lab_input(preset, params):
    assert expected_params(UNET3D_PRESETS[preset]["depth"], 32, 4, 3) == params
    model = build_unet_3d((4, 160, 160, 16), preset=preset)
    assert model.count_params() == params
    assert tuple(model.output.shape) == (None, 3, 160, 160, 16)
    conv_filters = [layer.filters for layer in model.layers
                    if isinstance(layer, keras.layers.Conv3D)]
    if preset == "assignment":  # the assignment's summary, top to bottom and back up
        assert conv_filters == [32, 64, 64, 128, 128, 256, 256, 512,
                                256, 256, 128, 128, 64, 64, 3]


def test_default_build_is_the_lecture_preset():
    default, lecture = build_unet_3d(), build_unet_3d(preset="lecture")
    assert [l.get_config() for l in default.layers] == [l.get_config() for l in lecture.layers]
    assert default.count_params() == 833_507
    assert default.get_layer("decoder_level0_concat").axis == 1  # still channels_first


def test_explicit_values_equal_to_the_preset_are_accepted_and_others_rejected():
    model = build_unet_3d((1, 8, 8, 8), depth=4, base_filters=32, preset="assignment",
                          data_format="channels_first")
    assert model.count_params() == expected_params(4, 32, 1, 3)
    with pytest.raises(ArgumentError, match=r"depth=3 conflicts with preset='assignment'.*depth=4"):
        build_unet_3d((1, 8, 8, 8), depth=3, preset="assignment")
    with pytest.raises(ArgumentError, match=r"base_filters=16 conflicts with preset='lecture'"):
        build_unet_3d((1, 8, 8, 8), base_filters=16, preset="lecture")
    with pytest.raises(ArgumentError, match="'homework'"):
        build_unet_3d(preset="homework")


def test_explicit_values_without_a_preset_keep_working():
    model = build_unet_3d((2, 8, 8, 8), depth=3, base_filters=4, n_classes=2)
    assert model.count_params() == expected_params(3, 4, 2, 2)
    model = build_unet_3d((2, 8, 8, 8), base_filters=4)  # depth from the default preset: 2
    assert model.count_params() == expected_params(2, 4, 2, 3)


def test_assignment_preset_channels_last_predicts():
    model = build_unet_3d((8, 8, 8, 2), preset="assignment", data_format="channels_last",
                          n_classes=2)
    y = forward(model, np.zeros((1, 8, 8, 8, 2), "float32"))
    assert y.shape == (1, 8, 8, 8, 2)
    with pytest.raises(ArgumentError, match="divisible by 8"):  # depth 4 pools 3 times
        build_unet_3d((12, 8, 8, 2), preset="assignment", data_format="channels_last")


def _policies(model: keras.Model) -> dict[str, str]:
    return {l.name: l.dtype_policy.name for l in model.layers
            if not isinstance(l, keras.layers.InputLayer)}


def test_mixed_precision_computes_in_bfloat16_with_float32_weights_and_output():
    kwargs = dict(input_shape=(8, 8, 8, 2), depth=2, base_filters=4, n_classes=2,
                  data_format="channels_last")
    mixed = build_unet_3d(**kwargs, precision="mixed_bfloat16")
    reference = build_unet_3d(**kwargs, precision="float32")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    policies = _policies(mixed)
    assert policies.pop("head_activation") == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    assert set(_policies(reference).values()) == {"float32"}
    assert {w.dtype for w in mixed.weights} == {"float32"}
    reference.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 8, 2)).astype("float32")
    y_mixed, y_ref = forward(mixed, x), forward(reference, x)
    assert y_mixed.dtype == np.float32
    # bfloat16 keeps 8 significant bits: sigmoid outputs agree to about 1e-2, not exactly.
    np.testing.assert_allclose(y_mixed, y_ref, atol=3e-2)
    assert not np.array_equal(y_mixed, y_ref)


def test_precision_auto_follows_resolve_precision_and_none_the_global_policy():
    kwargs = dict(input_shape=(1, 4, 4, 4), depth=1, base_filters=2)
    auto = build_unet_3d(**kwargs, precision="auto")
    assert auto.get_layer("head_conv").dtype_policy.name == resolve_precision("auto")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inherited = build_unet_3d(**kwargs)
    finally:
        keras.config.set_dtype_policy(previous)
    assert inherited.get_layer("head_conv").dtype_policy.name == "mixed_bfloat16"
    assert inherited.get_layer("head_activation").dtype_policy.name == "float32"
    with pytest.raises(ArgumentError, match="'bf16'"):
        build_unet_3d(**kwargs, precision="bf16")


def test_mixed_precision_model_trains_and_round_trips(tmp_path):
    model = build_unet_3d((1, 8, 8, 4), depth=2, base_filters=2, n_classes=1,
                          precision="mixed_bfloat16")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  jit_compile=False)  # XLA compilation would take ~20 s here
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 8, 8, 4)).astype("float32")
    y = (x > 0).astype("float32")
    losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert all(np.isfinite(losses))
    path = tmp_path / "mixed3d.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("head_conv").dtype_policy.name == "mixed_bfloat16"
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))
