"""Every keras.applications backbone in the registry: its U-Net works as VGG16's does.

`test_every_backbone_unet` builds each entry's default U-Net once (one test per entry, so that
pytest-xdist never builds a model twice) with a cheap decoder, at any input size (NASNet: the
fixed sizes it needs), and checks on it: skip strides and channel counts (measured at 224 px;
rounded for valid-padding backbones), output shape = input shape at 64×64 (or the backbone's
minimum if larger) and 80×112, softmax sums to 1, each skip layer feeds its decoder stage in the
graph, `freeze(m, "encoder")` leaves only bottleneck, decoder and head trainable,
`top_blocks(m, 1)` selects exactly the last stage, and `.keras` save/load in safe mode gives
identical predictions.

`.keras` save/load runs for one member of each family (`FAMILY_FIRST`, its lightest, plus the
Inception-ResNet and MobileNetV3-Small layouts): a family's members are built from the same layer
classes (ConvNeXt's LayerScale, Inception-ResNet's CustomScaleLayer, NASNet's cells, ...), so the
others would add 8-45 s each of saving and rebuilding on the 2-core machine (files of 160-1,400 MB)
and no coverage.

`make test` runs `test_every_backbone_unet` on those 14 entries; the other 26 members (the same
code path with other widths, depths and layer names, 4-5 minutes of building on the 2-core AVX2
machine, 27 s for NASNetLarge alone) carry the `every_backbone` mark, which `make test` deselects
and `make test-every-backbone` runs; `.ci/run` runs both, so CI still checks all 40.
"""

from __future__ import annotations

import socket

import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.errors import ArgumentError
from vggunet.models.registry import ENCODERS, backbone_key
from conftest import input_sources

# Channels of each entry's default skips and bottleneck source, high to low resolution.
CHANNELS = {
    "vgg16": (64, 128, 256, 512, 512, 512), "vgg19": (64, 128, 256, 512, 512, 512),
    "resnet50": (64, 256, 512, 1024, 2048), "resnet101": (64, 256, 512, 1024, 2048),
    "resnet152": (64, 256, 512, 1024, 2048), "resnet50v2": (64, 256, 512, 1024, 2048),
    "resnet101v2": (64, 256, 512, 1024, 2048), "resnet152v2": (64, 256, 512, 1024, 2048),
    "densenet121": (64, 128, 256, 512, 1024), "densenet169": (64, 128, 256, 640, 1664),
    "densenet201": (64, 128, 256, 896, 1920), "mobilenet": (64, 128, 256, 512, 1024),
    "mobilenetv2": (96, 144, 192, 576, 1280), "mobilenetv3small": (16, 72, 96, 288, 576),
    "mobilenetv3large": (64, 72, 240, 672, 960),
    "efficientnetb0": (96, 144, 240, 672, 1280), "efficientnetb1": (96, 144, 240, 672, 1280),
    "efficientnetb2": (96, 144, 288, 720, 1408), "efficientnetb3": (144, 192, 288, 816, 1536),
    "efficientnetb4": (144, 192, 336, 960, 1792), "efficientnetb5": (144, 240, 384, 1056, 2048),
    "efficientnetb6": (192, 240, 432, 1200, 2304),
    "efficientnetb7": (192, 288, 480, 1344, 2560),
    "efficientnetv2b0": (16, 32, 192, 672, 1280), "efficientnetv2b1": (16, 32, 192, 672, 1280),
    "efficientnetv2b2": (16, 32, 224, 720, 1408), "efficientnetv2b3": (16, 40, 224, 816, 1536),
    "efficientnetv2s": (24, 48, 256, 960, 1280), "efficientnetv2m": (24, 48, 320, 1056, 1280),
    "efficientnetv2l": (32, 64, 384, 1344, 1280),
    "convnexttiny": (96, 192, 384, 768), "convnextsmall": (96, 192, 384, 768),
    "convnextbase": (128, 256, 512, 1024), "convnextlarge": (192, 384, 768, 1536),
    "convnextxlarge": (256, 512, 1024, 2048),
    "xception": (128, 256, 728, 1024, 2048), "inceptionv3": (64, 192, 288, 768, 2048),
    "inceptionresnetv2": (64, 192, 320, 1088, 1536), "nasnetmobile": (32, 44, 264, 528, 1056),
    "nasnetlarge": (96, 168, 1008, 2016, 4032),
}
# Strides of the same layers: VGG taps full resolution and pools its bottleneck source once
# more; ConvNeXt's stem is stride 4; every other entry taps 2, 4, 8, 16 and 32.
STRIDES = {"vgg16": (1, 2, 4, 8, 16, 16), "vgg19": (1, 2, 4, 8, 16, 16),
           **{name: (4, 8, 16, 32) for name in ENCODERS if name.startswith("convnext")}}
FAMILY_FIRST = {"vgg16", "resnet50", "resnet50v2", "densenet121", "mobilenet", "mobilenetv2",
             "mobilenetv3small", "efficientnetb0", "efficientnetv2b0", "convnexttiny", "xception",
             "inceptionv3", "inceptionresnetv2", "nasnetmobile"}
TINY = dict(num_classes=3, weights=None, decoder_filters=(8,) * 5, bottleneck_filters=8,
            precision="float32")


def test_registry_holds_every_keras_application():
    exported = {name for name in dir(keras.applications) if name[0].isupper()}
    assert len(exported) == 40
    assert {name.lower() for name in exported} == set(ENCODERS)
    assert set(CHANNELS) == set(ENCODERS)
    # Save/load covers every family (keras.applications module; VGG19 is VGG16's layers).
    families = {spec.preprocess_input.module for spec in ENCODERS.values()}
    assert {ENCODERS[n].preprocess_input.module for n in FAMILY_FIRST} == families - {
        "keras.applications.vgg19"}
    for key, spec in ENCODERS.items():
        assert spec.name == key == spec.constructor.name.lower()
        assert len(spec.stage_ends) >= 4 and spec.min_input_size >= 32


@pytest.mark.parametrize("spelling, key", [
    ("ConvNeXtTiny", "convnexttiny"), ("convnext_tiny", "convnexttiny"),
    ("mobilenet_v3_large", "mobilenetv3large"), ("EfficientNet-B0", "efficientnetb0"),
    ("Inception ResNet V2", "inceptionresnetv2"), ("resnet50_v2", "resnet50v2"),
    ("VGG16", "vgg16"),
])
def test_lookup_ignores_case_underscores_dashes_and_spaces(spelling, key):
    assert backbone_key(spelling) == key
    assert vu.get_encoder_spec(spelling).name == key


def test_unknown_backbone_suggests_the_closest_names():
    with pytest.raises(ArgumentError) as info:
        vu.get_encoder_spec("efficientnet_b9")
    assert "efficientnetb0" in str(info.value) and "Did you mean" in str(info.value)
    assert "convnexttiny" in str(info.value)  # the list names every key


@pytest.mark.parametrize("name", list(ENCODERS))
def test_in_model_preprocessing_is_keras_preprocess_input(name):
    """Each entry's `BackbonePreprocess` mode equals its family's `preprocess_input`; families
    that preprocess inside their model (EfficientNet, ConvNeXt, MobileNetV3) get "none"."""
    spec = vu.get_encoder_spec(name)
    x = (np.random.default_rng(0).random((1, 4, 5, 3)) * 255).astype("float32")
    ours = np.asarray(vu.BackbonePreprocess(spec.preprocessing)(x))
    np.testing.assert_allclose(ours, spec.preprocess_input(x.copy()), atol=1e-4)


# One entry per weights-file naming scheme (the others differ only in the model's name).
URL_CASES = ["vgg16", "resnet50", "resnet50v2", "densenet121", "mobilenet", "mobilenetv2",
             "mobilenetv3small", "efficientnetb0", "efficientnetv2b0", "convnexttiny",
             "xception", "inceptionv3", "inceptionresnetv2", "nasnetmobile"]


@pytest.mark.parametrize("name", URL_CASES)
def test_weights_url_is_the_one_keras_downloads(name, monkeypatch, tmp_path):
    """With the network cut (and an empty cache), Keras's download error names its URL."""
    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = vu.get_encoder_spec(name)
    shape = (224, 224, 3) if spec.fixed_size else (None, None, 3)
    with pytest.raises(Exception) as info:
        spec.constructor(include_top=False, weights="imagenet", input_shape=shape)
    assert spec.weights_url in str(info.value)


# ---------------------------------------------------------------------------------- per entry


def _build(name: str, size: tuple[int, int] | None = None) -> keras.Model:
    shape = (*size, 3) if size else (None, None, 3)
    return vu.build_vgg_unet(name, input_shape=shape, **TINY)


def _tap_names(model: keras.Model) -> list[str]:
    """Skip layers (recorded roles) and the bottleneck source (the bottleneck's input)."""
    source = model.get_layer("bottleneck_pool" if "bottleneck_pool" in
                             [l.name for l in model.layers] else "bottleneck_conv1")
    return vu.inspect.skip_layer_names(model) + input_sources(model, source.name)


def _check_strides_and_channels(model: keras.Model, name: str) -> list[str]:
    taps = _tap_names(model)
    # 448 px for models of any size: large enough for valid-padding strides to round right.
    probe = model.input_shape[1:3] if model.input_shape[1] else (448, 448)
    outputs = keras.Model(model.input, [model.get_layer(t).output for t in taps])
    shapes = outputs.compute_output_shape((1, *probe, 3))
    strides = [2 ** round(np.log2(probe[0] / s[1])) for s in shapes]
    assert strides == list(STRIDES.get(name, (2, 4, 8, 16, 32))), (taps, shapes)
    assert [s[-1] for s in shapes] == list(CHANNELS[name]), taps
    return taps


def _check_forward(model: keras.Model, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    outs = []
    for height, width in sizes:
        x = (rng.random((1, height, width, 3)) * 255).astype("float32")
        out = np.asarray(model(x, training=False))
        assert out.shape == (1, height, width, 3)
        np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
        outs.append((x, out))
    return outs


def _check_skips_feed_the_decoder(model: keras.Model, name: str, taps: list[str]) -> None:
    strides = STRIDES.get(name, (2, 4, 8, 16, 32))
    for tap, stride in zip(taps[:-1], strides):
        stage = 5 - int(np.log2(stride))
        assert input_sources(model, f"decoder_stage{stage}_concat")[1] == tap


def _check_freezing(model: keras.Model, spec: vu.EncoderSpec) -> None:
    roles = vu.layer_roles(model)
    vu.freeze(model, "encoder")
    trainable = {roles[l.name] for l in model.layers if l.trainable and l.weights}
    assert trainable == {"bottleneck", "decoder", "head"}
    assert not any(l.trainable for l in model.layers if roles[l.name] in ("encoder", "skip"))
    # The last stage: every backbone layer after the end of the one before it.
    end = spec.stage_ends[-2]
    numbering = model.backbone_layers
    first = (end if isinstance(end, int) else numbering.index(end)) + 1
    last_stage = vu.top_blocks(model, 1)
    selected = {l.name for l in model.layers if last_stage(l)}
    assert selected == set(numbering[first:])
    assert vu.encoder_blocks(model) == list(range(1, len(spec.stage_ends) + 1))


def _check_save_load(model: keras.Model, outs: list, tmp_path) -> None:
    path = vu.save_model(model, tmp_path / "model.keras")
    loaded = keras.saving.load_model(path)  # safe mode, no custom_objects
    assert type(loaded).__name__ == "SegmentationModel"
    assert loaded.min_input_size == model.min_input_size
    assert loaded.backbone_layers == model.backbone_layers
    for x, out in outs:
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), out)


def _entry(name: str):
    """A family's first member runs in `make test`; the others in `make test-every-backbone`."""
    return pytest.param(name, marks=() if name in FAMILY_FIRST else pytest.mark.every_backbone)


@pytest.mark.parametrize("name", [_entry(name) for name in ENCODERS])
def test_every_backbone_unet(name, tmp_path):
    spec = vu.get_encoder_spec(name)
    side = max(64, spec.min_input_size)
    sizes = [(side, side), (80, 112)]
    if spec.fixed_size:  # NASNet: one model per size
        models = [_build(name, size) for size in sizes]
        outs = [_check_forward(m, [m.input_shape[1:3]])[0] for m in models]
    else:
        models = [_build(name)]
        outs = _check_forward(models[0], sizes)
    model = models[-1]
    assert model.name == f"{name}_unet" and model.min_input_size == spec.min_input_size
    taps = _check_strides_and_channels(model, name)
    _check_skips_feed_the_decoder(model, name, taps)
    fits = [l.name for l in model.layers if isinstance(l, vu.CropOrPadToReference)]
    assert bool(fits) == spec.valid_padding
    if name in FAMILY_FIRST:
        _check_save_load(model, outs[-1:], tmp_path)
    _check_freezing(model, spec)


# ------------------------------------------------------------------------ features, in detail


@pytest.fixture(scope="module")
def inception_unet() -> keras.Model:
    """InceptionV3 (valid padding, auto-named stem layers, minimum 75 px), any input size."""
    return vu.build_vgg_unet("inceptionv3", **TINY)


def test_auto_named_layers_are_found_by_index_in_every_build():
    """Keras numbers automatic names per session (re_lu, re_lu_1, ...): a second build of the
    same backbone has other names, and the registry's indices still find the same layers."""
    first, second = (vu.build_encoder("mobilenetv3small", input_shape=(64, 64, 3))
                     for _ in range(2))
    assert first.output_names != second.output_names  # re_lu_2 vs re_lu_22, ...
    spec = vu.get_encoder_spec("mobilenetv3small")
    for encoder in (first, second):
        numbering = encoder.backbone_layers
        assert encoder.output_names == [numbering[i] for i in (*spec.skip_layers,
                                                                spec.bottleneck_source)]
    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None)
    classes = [type(layer).__name__ for layer in reference.layers]
    # Index i of the backbone's own numbering is the layer `reference.layers[i]` is.
    assert [type(second.get_layer(n)).__name__ for n in second.backbone_layers[1:]] == \
        classes[1:len(second.backbone_layers)]


def test_indices_override_the_default_taps_with_grey_input_and_decoder_options():
    model = vu.build_vgg_unet(
        "mobilenetv3small", input_shape=(None, None, 1), skip_layers=[19, 37, 111],
        bottleneck_source=156, decoder="transpose", decoder_batchnorm=True,
        **{**TINY, "precision": "mixed_bfloat16"})
    numbering = model.backbone_layers
    assert vu.inspect.skip_layer_names(model) == [numbering[i] for i in (19, 37, 111)]
    assert "decoder_stage5_concat" not in [l.name for l in model.layers]  # no stride-2 skip
    assert model.get_layer(numbering[19]).compute_dtype == "bfloat16"
    out = np.asarray(model(np.full((1, 40, 56, 1), 100.0, "float32"), training=False))
    assert out.shape == (1, 40, 56, 3) and out.dtype == np.float32 and np.isfinite(out).all()


def test_valid_padding_backbone_with_fixed_size_and_a_pooled_bottleneck():
    """Xception, fixed 75×99 grey input, stride-4/8 skips and the stride-16 layer as the
    bottleneck source (pooled once more), skip BatchNorm: every stage fits its skip."""
    model = vu.build_vgg_unet(
        "xception", input_shape=(75, 99, 1), skip_layers=["block3_sepconv2_bn", 31],
        bottleneck_source="block13_sepconv2_act", skip_batchnorm=True, **TINY)
    assert "bottleneck_pool" in [l.name for l in model.layers]
    fits = [l.name for l in model.layers if isinstance(l, vu.CropOrPadToReference)]
    assert fits == ["decoder_stage2_fit", "decoder_stage3_fit", "head_fit"]
    assert tuple(model.output.shape) == (None, 75, 99, 3)
    out = np.asarray(model(np.full((2, 75, 99, 1), 50.0, "float32"), training=False))
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kwargs, needles", [
    (dict(backbone="inceptionv3", input_shape=(74, 80, 3)),
     ["height 74", "'inceptionv3'", "at least 75"]),
    (dict(backbone="xception", input_shape=(64, 20, 3)),
     ["width 20", "pools 5 times", "at least 32"]),
    (dict(backbone="nasnetmobile"), ["'nasnetmobile'", "fixed input size", "(224, 224, 3)"]),
    (dict(backbone="mobilenetv3small", skip_layers=[19, 999]),
     ["skip_layers", "999", "1..156", "MobileNetV3Small(include_top=False).layers"]),
    (dict(backbone="mobilenetv3small", bottleneck_source=0), ["bottleneck_source", "0"]),
    (dict(backbone="mobilenetv3small", skip_layers=[19, True]), ["skip_layers", "True"]),
])
def test_bad_backbone_arguments_raise_clear_errors(kwargs, needles):
    with pytest.raises(ArgumentError) as info:
        vu.build_vgg_unet(**{"weights": None, **kwargs})
    for needle in needles:
        assert needle in str(info.value)


def test_predict_pads_images_below_the_models_minimum(inception_unet):
    assert inception_unet.min_input_size == 75
    image = np.full((40, 50, 3), 120.0, "float32")
    proba = vu.predict_proba(inception_unet, image)
    assert proba.shape == (40, 50, 3)
    np.testing.assert_allclose(proba.sum(axis=-1), 1.0, atol=1e-5)
    tiled = vu.predict_tiled(inception_unet, np.full((100, 180, 3), 120.0, "float32"),
                             tile=80, overlap=8, verbose=False)
    assert tiled.shape == (100, 180, 3)
    with pytest.raises(vu.PredictionError, match="tile must be >= 75"):
        vu.predict_tiled(inception_unet, image, tile=64, overlap=8)


def test_valid_padding_output_matches_the_input_at_every_size(inception_unet):
    for height, width in [(75, 75), (76, 131), (97, 75)]:
        out = inception_unet(np.zeros((1, height, width, 3), "float32"), training=False)
        assert tuple(out.shape) == (1, height, width, 3)


@pytest.mark.parametrize("anchor", ["center", "top_left"])
def test_crop_or_pad_to_reference_matches_numpy(anchor):
    layer = vu.CropOrPadToReference(anchor)
    x = np.arange(5 * 7, dtype="float32").reshape(1, 5, 7, 1)
    for height, width in [(3, 9), (8, 4), (5, 7)]:
        out = np.asarray(layer([x, np.zeros((1, height, width, 2), "float32")]))
        rows = np.arange(height) + ((5 - height) // 2 if anchor == "center" else 0)
        cols = np.arange(width) + ((7 - width) // 2 if anchor == "center" else 0)
        expected = x[:, np.clip(rows, 0, 4)][:, :, np.clip(cols, 0, 6)]
        np.testing.assert_array_equal(out, expected)
    copy = vu.CropOrPadToReference.from_config(layer.get_config())
    assert copy.anchor == anchor
    with pytest.raises(ArgumentError, match="anchor"):
        vu.CropOrPadToReference("middle")


def test_cli_backbone_flag_accepts_every_spelling(capsys):
    from vggunet.cli.app import build_parser, main

    parser = build_parser()
    for spelling in ("ConvNeXtTiny", "convnext_tiny", "convnext-tiny"):
        assert parser.parse_args(["inspect", "--backbone", spelling]).backbone == "convnexttiny"
    assert main(["inspect", "--backbone", "mobilenet_v3_small", "--weights", "none",
                 "--decoder-filters", "8,8,8,8,8", "--bottleneck-filters", "8",
                 "--roles", "skip"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if " skip" in line]
    assert len(rows) == 4
