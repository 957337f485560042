"""keras-hub backbones (models/hub.py): U-Nets on tiny ResNet and EfficientNet backbones.

Presets download from Kaggle / Hugging Face, which CI cannot reach, so the backbones here are
built from keras-hub's constructors with random weights, as small as the constructors allow.
"""

from __future__ import annotations

import math
import subprocess
import sys

import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.errors import ArgumentError, MissingFileError, WeightsError
from vggunet.models import hub
from vggunet.models.roles import graph_skip_names
from conftest import REPO, forward, input_sources, random_images

keras_hub = pytest.importorskip(
    "keras_hub", reason="keras-hub is not installed: it is the optional extra [hub] "
    "(pip install -e '.[hub]'; needs Python >= 3.11)")

DECODER = {"decoder_filters": (16, 16, 8, 8, 8), "bottleneck_filters": 16}


def _resnet(seed: int = 0):
    """P2..P5 at strides 4..32 (no stride-2 level); keras-hub wants 64 filters in stack 0."""
    keras.utils.set_random_seed(seed)
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block")


def _efficientnet(seed: int = 0):
    """P1..P5 at strides 2..32; fused and MBConv blocks (keras-hub's own layer classes)."""
    keras.utils.set_random_seed(seed)
    return keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3] * 5, stackwise_num_repeats=[1] * 5,
        stackwise_input_filters=[8] * 5, stackwise_output_filters=[8] * 5,
        stackwise_expansion_ratios=[1, 2, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0, 0, 0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused", "unfused", "unfused"],
        stackwise_width_coefficients=[1.0] * 5, stackwise_depth_coefficients=[1.0] * 5,
        num_features=16)


FAMILIES = {"resnet": _resnet, "efficientnet": _efficientnet}


@pytest.fixture(scope="module")
def resnet():
    return _resnet()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request):
    """(backbone, U-Net for any input size): each family's U-Net built once per session."""
    backbone = FAMILIES[request.param]()
    model = vu.build_vgg_unet(backbone=backbone, num_classes=3, precision="float32", **DECODER)
    return backbone, model


@pytest.mark.parametrize("size", [(64, 64), (80, 112)])
def test_unet_output_matches_input_size_and_softmax_sums_to_one(case, size, rng):
    _, model = case
    out = forward(model, random_images(rng, 2, *size))
    assert out.shape == (2, *size, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_pyramid_levels_feed_the_decoder_stage_of_their_stride(case):
    backbone, model = case
    levels = hub.pyramid_levels(backbone)
    assert [level.stride for level in levels] == sorted(level.stride for level in levels)
    assert levels[-1].stride == 32
    skips = [level.layer for level in levels[:-1]]
    assert graph_skip_names(model) == skips
    assert [name for name, role in model.roles.items() if role == "skip"] == skips
    for level in levels[:-1]:
        stage = 5 - int(math.log2(level.stride))
        assert input_sources(model, f"decoder_stage{stage}_concat")[1] == level.layer
    # The deepest level (stride 32) is the bottleneck's source, without another pooling.
    assert input_sources(model, "bottleneck_conv1") == [levels[-1].layer]
    # A missing stride-1 (and, for ResNet, stride-2) level leaves those stages without skip.
    strides = {level.stride for level in levels}
    stages = {layer.name.split("_")[1] for layer in model.layers if layer.name.endswith("_concat")}
    assert stages == {f"stage{5 - int(math.log2(s))}" for s in strides - {32}}


def test_freeze_encoder_leaves_only_bottleneck_decoder_and_head_trainable(case):
    _, model = case
    before = {layer.name: layer.trainable for layer in model.layers}
    try:
        report = vu.freeze(model, "encoder")
        trainable = {model.roles[l.name] for l in model.layers if l.trainable and l.weights}
        assert trainable == {"bottleneck", "decoder", "head"}
        assert report.frozen_params == sum(
            int(np.prod(w.shape)) for l in model.layers if model.roles[l.name] in
            ("encoder", "skip") for w in l.weights)
    finally:
        for layer in model.layers:
            layer.trainable = before[layer.name]


def test_pyramid_levels_are_the_stages(case):
    backbone, model = case
    levels = hub.pyramid_levels(backbone)
    assert vu.encoder_blocks(model) == list(range(1, len(levels) + 1))
    order = [layer.name for layer in backbone.layers]
    last_stage = order[order.index(levels[-2].layer) + 1:order.index(levels[-1].layer) + 1]
    chosen = vu.top_blocks(model, 1)
    assert [layer.name for layer in model.layers if chosen(layer)] == last_stage
    assert all(model.stages[name] == len(levels) for name in last_stage)
    assert model.stages[levels[0].layer] == 1


def test_backbone_numbering_is_the_keras_hub_backbones(case):
    backbone, model = case
    numbering = model.backbone_layers
    assert numbering[0] == "input_image"
    assert numbering[1:] == [layer.name for layer in backbone.layers[1:]][:len(numbering) - 1]


def test_save_load_in_safe_mode_gives_identical_predictions(case, tmp_path, rng):
    _, model = case
    path = vu.save_model(model, tmp_path / "hub.keras")
    loaded = vu.load_model(path)
    assert type(loaded) is type(model)
    assert (loaded.roles, loaded.stages, loaded.backbone_layers) == (
        model.roles, model.stages, model.backbone_layers)
    x = random_images(rng, 2, 48, 80)
    np.testing.assert_array_equal(forward(loaded, x), forward(model, x))


@pytest.mark.slow
def test_file_loads_without_importing_keras_hub_or_custom_objects(tmp_path):
    """Keras imports keras-hub's layer modules itself: users need no `import keras_hub`."""
    encoder = vu.build_encoder(_efficientnet(), input_shape=(32, 32, 3), precision="float32")
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    script = (
        "import sys, keras, vggunet\n"
        "assert 'keras_hub' not in sys.modules\n"
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
        "assert 'keras_hub' in sys.modules, 'keras did not import keras_hub itself'\n"
        "print(type(m.get_layer('block4a_')).__module__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "keras_hub" in result.stdout


def test_build_encoder_taps_the_pyramid(resnet):
    encoder = vu.build_encoder(resnet, input_shape=(64, 96, 3))
    levels = hub.pyramid_levels(resnet)
    assert encoder.name == "hub_resnet_encoder"
    assert [t.name for t in encoder.outputs] == [level.layer for level in levels]
    assert [tuple(t.shape[1:]) for t in encoder.outputs] == [
        (64 // int(level.stride), 96 // int(level.stride), level.channels) for level in levels]
    assert encoder.roles["input_preprocess"] == "input"
    assert isinstance(encoder.get_layer("input_preprocess"), vu.BackbonePreprocess)
    assert encoder.get_layer("input_preprocess").mode == "torch"


def test_encoder_equals_the_backbone_on_preprocessed_pixels(resnet, rng):
    """The copies carry the backbone's weights; the backbone itself is not touched."""
    layers_before = list(resnet.layers)
    encoder = vu.build_encoder(resnet, input_shape=(64, 64, 3), preprocessing=False)
    features = keras.Model(resnet.inputs[0], list(resnet.pyramid_outputs.values()))
    x = random_images(rng, 2, 64, 64) / 255.0
    for ours, theirs in zip(forward(encoder, x), forward(features, x)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert list(resnet.layers) == layers_before
    assert not any(encoder.get_layer(layer.name) is layer for layer in resnet.layers[1:])


def test_image_task_supplies_its_converters_scale_and_offset(resnet, rng):
    converter = keras_hub.layers.ResNetImageConverter(scale=[0.5, 0.25, 2.0],
                                                      offset=[-1.0, 0.0, 3.0])
    task = keras_hub.models.ResNetImageClassifier(
        backbone=resnet, num_classes=2,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
    assert hub.is_hub_backbone(task) and hub.split_hub_model(task)[0] is resnet
    encoder = vu.build_encoder(task, input_shape=(32, 32, 3))
    preprocess = keras.Model(encoder.inputs[0], encoder.get_layer("input_preprocess").output)
    x = random_images(rng, 1, 32, 32)
    np.testing.assert_allclose(forward(preprocess, x),
                               x * [0.5, 0.25, 2.0] + [-1.0, 0.0, 3.0], rtol=1e-6)
    assert "input_preprocess" not in [
        l.name for l in vu.build_encoder(task, preprocessing=False).layers]


def test_grey_input_is_repeated_to_the_backbones_channels(resnet, rng):
    grey = vu.build_encoder(resnet, input_shape=(None, None, 1), pad_to_multiple=32)
    rgb = vu.build_encoder(resnet, input_shape=(None, None, 3), pad_to_multiple=32)
    x = random_images(rng, 1, 40, 50, channels=1)
    for a, b in zip(forward(grey, x), forward(rgb, np.repeat(x, 3, -1))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert grey.get_layer("input_gray_to_rgb").output.shape[-1] == 3


# Keras warns about each container of the mismatched file before it raises.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_file_of_the_backbone_is_loaded_into_a_copy(resnet, tmp_path, rng):
    path = tmp_path / "resnet.weights.h5"
    resnet.save_weights(path)
    other = _resnet(seed=1)
    before = [w.copy() for w in other.get_weights()]
    from_file = vu.build_encoder(other, weights=path, input_shape=(32, 32, 3))
    reference = vu.build_encoder(resnet, input_shape=(32, 32, 3))
    x = random_images(rng, 1, 32, 32)
    for a, b in zip(forward(from_file, x), forward(reference, x)):
        np.testing.assert_array_equal(a, b)
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))
    with pytest.raises(MissingFileError, match="nowhere.weights.h5"):
        vu.build_encoder(other, weights=tmp_path / "nowhere.weights.h5")
    _efficientnet().save_weights(tmp_path / "efficientnet.weights.h5")
    with pytest.raises(WeightsError, match="does not fit keras-hub backbone"):
        vu.build_encoder(other, weights=tmp_path / "efficientnet.weights.h5")


def test_skip_layers_and_source_by_level_or_layer_name(resnet):
    encoder = vu.build_encoder(resnet, skip_layers=["P3", "stack2_block0_out"],
                               bottleneck_source="P5", input_shape=(64, 64, 3))
    assert [t.name for t in encoder.outputs] == [
        "stack1_block0_out", "stack2_block0_out", "stack3_block0_out"]
    shallow = vu.build_encoder(resnet, bottleneck_source="P4", input_shape=(64, 64, 3))
    assert [t.name for t in shallow.outputs] == [
        "stack0_block0_out", "stack1_block0_out", "stack2_block0_out"]
    assert "stack3_block0_out" not in [layer.name for layer in shallow.layers]


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (16, 64, 3)}, "input height 16 is too small"),
    ({"input_shape": (None, None, 4)}, "with 3 channels"),
    ({"skip_layers": ["P9"]}, r"neither a pyramid level \(P2, P3, P4, P5\)"),
    ({"skip_layers": ["stack0_block0_ot"]}, "Did you mean 'stack0_block0_out'"),
    ({"skip_layers": ["P4", "P3"]}, "high to low resolution"),
    ({"skip_layers": "P3"}, "must be a list"),
    ({"preprocessing": 3.0}, "preprocessing must be"),
])
def test_bad_arguments_name_the_problem(resnet, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        vu.build_encoder(resnet, **kwargs)


def test_unsupported_backbones_raise_clear_errors():
    vgg = keras_hub.models.VGGBackbone(stackwise_num_repeats=[1], stackwise_num_filters=[4])
    with pytest.raises(ArgumentError, match="has no feature pyramid"):
        vu.build_vgg_unet(backbone=vgg)
    # keras-hub 0.32's MiT layers do not survive from_config(get_config()).
    mit = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 1],
        layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2], image_shape=(32, 32, 3), hidden_dims=[8, 8])
    with pytest.raises(ArgumentError, match="cannot be rebuilt from its config"):
        vu.build_encoder(mit, input_shape=(32, 32, 3))


def test_mixed_precision_decoder_with_a_float32_backbone(resnet, rng):
    model = vu.build_vgg_unet(backbone=resnet, input_shape=(64, 64, 3), num_classes=2,
                              precision="mixed_bfloat16", **DECODER)
    assert model.get_layer("decoder_stage1_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1_conv").compute_dtype == "float32"
    out = forward(model, random_images(rng, 1, 64, 64))
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_documented_presets_exist():
    """The README's from_preset example names presets keras-hub lists."""
    assert "resnet_50_imagenet" in keras_hub.models.Backbone.presets
    assert "resnet_50_imagenet" in keras_hub.models.ImageClassifier.presets
    assert "efficientnet_b0_ra_imagenet" in keras_hub.models.Backbone.presets
