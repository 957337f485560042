"""freeze / unfreeze by count, role, prefixes, up_to, predicate; BatchNorm rule; recompile."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import vggunet as vu
from conftest import shallow_unet
from vggunet.errors import ArgumentError
from vggunet.inspect import all_layers as nested_layers
from vggunet.inspect import layer_roles
from vggunet.models.registry import EncoderSpec, KerasFunction


def _small_vgg(**kwargs) -> keras.Model:
    return vu.build_vgg_unet("vgg16", input_shape=(64, 64, 3), weights=None,
                             decoder_filters=(32, 16, 16, 8, 8), bottleneck_filters=32,
                             precision="float32", **kwargs)


@pytest.fixture(scope="module")
def resnet_unet() -> keras.Model:
    return vu.build_vgg_unet("resnet50", input_shape=(64, 64, 3), weights=None,
                             decoder_filters=(32, 16, 16, 8, 8), bottleneck_filters=32,
                             precision="float32")


def test_freeze_first_n_layers():
    model = _small_vgg()
    report = vu.freeze(model, 10)
    assert [l.trainable for l in model.layers[:10]] == [False] * 10
    assert all(l.trainable for l in model.layers[10:])
    assert len(report.changed) == 10


def test_freeze_encoder_leaves_decoder_trainable():
    model = _small_vgg()
    report = vu.freeze(model, "encoder")
    roles = layer_roles(model)
    for layer in model.layers:
        assert layer.trainable == (roles[layer.name] not in ("encoder", "skip")), layer.name
    encoder_params = sum(model.get_layer(f"block{b}_conv{c}").count_params()
                         for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for c in range(1, n + 1))
    assert report.frozen_params == encoder_params == 14_714_688
    assert report.trainable_params == model.count_params() - encoder_params
    assert "14,714,688 frozen" in str(report)


def test_freeze_by_prefixes_and_up_to_and_predicate():
    model = _small_vgg()
    vu.freeze(model, ["block1", "block2"])
    assert not model.get_layer("block2_conv2").trainable
    assert model.get_layer("block3_conv1").trainable

    model = _small_vgg()
    vu.freeze(model, up_to="block4")
    assert not model.get_layer("block4_conv3").trainable
    assert not model.get_layer("block1_conv1").trainable
    assert model.get_layer("block5_conv1").trainable
    assert model.get_layer("bottleneck_conv1").trainable

    model = _small_vgg()
    vu.freeze(model, lambda layer: layer.name.endswith("conv2"))
    assert not model.get_layer("block3_conv2").trainable
    assert not model.get_layer("decoder_stage1_conv2").trainable
    assert model.get_layer("block3_conv1").trainable


def test_build_with_freeze_spec_matches_freeze_call():
    built = _small_vgg(freeze="encoder")
    manual = _small_vgg()
    vu.freeze(manual, "encoder")
    assert [l.trainable for l in built.layers] == [l.trainable for l in manual.layers]


@pytest.mark.parametrize("spec, kwargs, needle", [
    (["block9"], {}, "block9"),
    ("nothing", {}, "nothing"),
    (500, {}, "out of range"),
    (lambda layer: False, {}, "matches no layer"),
    (None, {"up_to": "block8"}, "block8"),
    (None, {}, "exactly one"),
    (3.5, {}, "3.5"),
])
def test_spec_matching_nothing_raises(spec, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        vu.freeze(_small_vgg(), spec, **kwargs)


def test_unfreeze_keeps_encoder_batchnorm_frozen_by_default(resnet_unet):
    vu.freeze(resnet_unet, "encoder")
    bn = [l for l in resnet_unet.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bn and not any(l.trainable for l in bn)
    report = vu.unfreeze(resnet_unet, vu.top_blocks(resnet_unet, 1))
    assert resnet_unet.get_layer("conv5_block3_3_conv").trainable
    assert not resnet_unet.get_layer("conv5_block3_3_bn").trainable
    assert not resnet_unet.get_layer("conv4_block6_3_conv").trainable
    assert "conv5_block3_3_bn" in report.kept_frozen_bn
    vu.unfreeze(resnet_unet, vu.top_blocks(resnet_unet, 1), train_bn=True)
    assert resnet_unet.get_layer("conv5_block3_3_bn").trainable


def test_frozen_batchnorm_runs_in_inference_mode(resnet_unet):
    vu.freeze(resnet_unet, "encoder")
    bn = resnet_unet.get_layer("conv1_bn")
    before = [w.copy() for w in bn.get_weights()]
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32") * 255
    frozen_out = resnet_unet([x], training=True)
    inference_out = resnet_unet([x], training=False)
    np.testing.assert_allclose(np.asarray(frozen_out), np.asarray(inference_out), atol=1e-5)
    for a, b in zip(before, bn.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_train_step_after_freeze_changes_only_trainable_weights():
    # The two-block U-Net: a fit traces its step in a third of the full encoder's time, and
    # freezing works on it the same way.
    model = shallow_unet()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    vu.freeze(model, "encoder")
    vu.recompile(model)
    enc_before = model.get_layer("block1_conv1").get_weights()[0].copy()
    dec_before = model.get_layer("decoder_stage2_conv2").get_weights()[0].copy()
    rng = np.random.default_rng(0)
    x = rng.random((2, 64, 64, 3)).astype("float32") * 255
    y = rng.integers(0, 2, (2, 64, 64))
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], enc_before)
    assert not np.array_equal(model.get_layer("decoder_stage2_conv2").get_weights()[0], dec_before)
    assert not any("block" in w.path for w in model.trainable_weights)


def test_recompile_keeps_loss_metrics_optimizer_and_sets_learning_rate():
    model = _small_vgg()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    vu.unfreeze(model, "all")
    vu.recompile(model, learning_rate=1e-4)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.9
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    assert model.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    assert model.get_compile_config()["metrics"] == ["accuracy"]
    with pytest.raises(ValueError, match="not been compiled"):
        vu.recompile(_small_vgg())


def test_encoder_blocks_for_vgg_and_resnet(resnet_unet):
    assert vu.encoder_blocks(_small_vgg()) == [1, 2, 3, 4, 5]
    assert vu.encoder_blocks(resnet_unet) == [1, 2, 3, 4, 5]


def _backprop_op_counts(model: keras.Model) -> dict[str, int]:
    """Conv backward ops that one gradient step actually runs.

    Keras's TF trainer takes a GradientTape and `tape.gradient(loss, model.trainable_weights)`.
    The tape also records frozen layers (their tf.Variables stay watchable), so their gradient
    ops are built, but TensorFlow runs only the ops the outputs depend on (the rest is pruned
    before execution): count the backward convs reachable from the function's outputs.
    """
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_weights)

    graph = step.get_concrete_function(tf.TensorSpec((2, 64, 64, 3)),
                                       tf.TensorSpec((2, 64, 64), tf.int32)).graph
    seen, stack = set(), [t.op for t in graph.outputs]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    types = [graph.get_operation_by_name(name).type for name in seen]
    return {t: types.count(t) for t in ("Conv2DBackpropFilter", "Conv2DBackpropInput")}


def test_frozen_encoder_is_not_back_propagated_through():
    """Phase 1's saving is structural, not assumed: with the encoder frozen, the step runs kernel
    gradients for the decoder convs only and no input gradient inside the encoder."""
    model = _small_vgg()
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    encoder_convs = [l for l in convs if l.name.startswith("block")]
    assert len(encoder_convs) == 13
    trainable = _backprop_op_counts(model)
    assert trainable["Conv2DBackpropFilter"] == len(convs)
    # Every conv but the first passes a gradient to its input.
    assert trainable["Conv2DBackpropInput"] == len(convs) - 1

    vu.freeze(model, "encoder")
    frozen = _backprop_op_counts(model)
    decoder_convs = len(convs) - len(encoder_convs)
    assert frozen["Conv2DBackpropFilter"] == decoder_convs
    # Inside the decoder only: the bottleneck's first conv reads the pooled encoder output, so
    # its input gradient is not needed either.
    assert frozen["Conv2DBackpropInput"] == decoder_convs - 1


# ---- the backbone's own numbering ------------------------------------------------------------

def _frozen(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if not layer.trainable]


def test_encoder_layers_freeze_what_seed_code_froze():
    """Seed code: `for layer in VGG16(include_top=False).layers[:10]: layer.trainable = False`."""
    seed = keras.applications.VGG16(include_top=False, weights=None)
    model = _small_vgg()
    report = vu.freeze(model, encoder_layers=10)
    assert _frozen(model) == ["input_image"] + [layer.name for layer in seed.layers[1:10]]
    assert [name for name in _frozen(model) if model.get_layer(name).weights] == [
        "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1",
        "block3_conv2", "block3_conv3"]
    assert report.changed == tuple(_frozen(model))
    # The model's own count freezes something else: its preprocessing layer comes first.
    counted = _small_vgg()
    vu.freeze(counted, 10)
    assert _frozen(counted) != _frozen(model) and "block3_conv3" not in _frozen(counted)

    spec_form = _small_vgg()
    vu.freeze(spec_form, "encoder[:10]")
    assert _frozen(spec_form) == _frozen(model)
    middle = _small_vgg()
    vu.freeze(middle, "encoder[3:10]")
    assert _frozen(middle) == [layer.name for layer in seed.layers[3:10]]
    selected = vu.select_layers(middle, encoder_layers=slice(3, 10))
    assert _frozen(middle) == [layer.name for layer in selected]


def test_encoder_slice_unfreezes_the_top_of_the_backbone():
    model = _small_vgg()
    vu.freeze(model, "encoder")
    report = vu.unfreeze(model, "encoder[15:]")
    assert report.changed == ("block5_conv1", "block5_conv2", "block5_conv3")
    assert not model.get_layer("block4_conv3").trainable


def test_encoder_layers_count_in_resnet50s_numbering(resnet_unet):
    seed = keras.applications.ResNet50(include_top=False, weights=None)
    vu.unfreeze(resnet_unet, "all", train_bn=True)
    vu.freeze(resnet_unet, encoder_layers=40)
    assert sorted(_frozen(resnet_unet)) == sorted(
        ["input_image"] + [layer.name for layer in seed.layers[1:40]])
    rows = {row.name: row.backbone_index for row in vu.layer_table(resnet_unet)}
    assert all(rows[layer.name] == i for i, layer in enumerate(seed.layers) if i)
    vu.unfreeze(resnet_unet, "all", train_bn=True)


@pytest.mark.parametrize("spec, kwargs, needle", [
    ("encoder[-4:]", {}, "whole numbers >= 0"),
    ("encoder[a:]", {}, "is not a slice"),
    ("encoder[30:]", {}, "selects no layer"),
    ("encoder", {"encoder_layers": 3}, "exactly one"),
    (None, {"encoder_layers": 2.5}, "2.5"),
    (None, {"encoder_layers": slice(1, 9, 2)}, "no step"),
])
def test_bad_encoder_slices_say_what_is_valid(spec, kwargs, needle):
    with pytest.raises(ArgumentError, match=re.escape(needle)):
        vu.freeze(_small_vgg(), spec, **kwargs)


def test_models_without_the_numbering_say_so():
    with pytest.raises(ArgumentError, match="no record of its backbone's layer numbering"):
        vu.freeze(vu.build_unet(input_size=(32, 32, 3), n_filters=2), encoder_layers=3)


def test_cli_freeze_spec_in_the_backbones_numbering(capsys):
    from vggunet.cli.app import main

    code = main(["inspect", "--backbone", "vgg16", "--input-size", "64x64", "--weights", "none",
                 "--decoder-filters", "8,8,8,8,8", "--bottleneck-filters", "8",
                 "--freeze", "encoder[:10]"])
    assert code in (0, None)
    rows = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()
            if re.match(r"^\s*\d+\s+\S+", line)}
    frozen = [name for name, cells in rows.items() if "no" in cells]
    model = _small_vgg()
    vu.freeze(model, encoder_layers=10)
    assert frozen == _frozen(model)
    assert rows["block3_conv3"][2] == "9"  # the backbone # column, beside the name


# ---- the BatchNorm rule for every family -----------------------------------------------------

def _encoder(constructor: str, skip: str, source: str) -> keras.Model:
    spec = EncoderSpec(KerasFunction("keras.applications", constructor), (skip,), source, "none",
                       KerasFunction("keras.applications", constructor), "https://x/y.h5",
                       constructor.lower())
    return vu.build_encoder(spec, input_shape=(None, None, 3), precision="float32")


def test_batchnorm_rule_for_mobilenetv2_and_efficientnet():
    for encoder in (_encoder("MobileNetV2", "block_1_expand_relu", "block_3_expand_relu"),
                    _encoder("EfficientNetB0", "block1a_project_bn", "block2a_project_bn")):
        # (Up to the first Dropout: training=True would apply it.)
        assert not any(isinstance(l, keras.layers.Dropout) for l in encoder.layers)
        bns = [l for l in encoder.layers if isinstance(l, keras.layers.BatchNormalization)]
        vu.freeze(encoder, "encoder")
        before = [w.copy() for w in bns[0].get_weights()]
        x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32") * 255
        for got, want in zip(encoder(x, training=True), encoder(x, training=False)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
        for a, b in zip(before, bns[0].get_weights()):
            np.testing.assert_array_equal(a, b)
        report = vu.unfreeze(encoder, "encoder")
        assert sorted(report.kept_frozen_bn) == sorted(l.name for l in bns)
        assert not any(l.trainable for l in bns)
        assert all(l.trainable for l in encoder.layers
                   if isinstance(l, keras.layers.Conv2D) and l.weights)


def test_layernorm_needs_no_rule_convnext():
    encoder = _encoder("ConvNeXtTiny", "convnext_tiny_stem",
                       "convnext_tiny_stage_0_block_2_identity")
    vu.freeze(encoder, "encoder")
    report = vu.unfreeze(encoder, "encoder")
    norms = [l for l in nested_layers(encoder) if isinstance(l, keras.layers.LayerNormalization)]
    assert norms and all(l.trainable for l in norms)  # no moving statistics: they just train
    assert report.kept_frozen_bn == ()


def test_batchnorm_nested_in_a_backbone_stage_stays_frozen():
    inputs = keras.Input((8, 8, 3), name="input_image")
    stage = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.BatchNormalization(name="stage_bn")], name="stage1")
    x = keras.layers.Conv2D(2, 1, name="head_conv")(stage(inputs))
    model = vu.SegmentationModel(inputs, x, name="nested")
    vu.freeze(model, "encoder")
    report = vu.unfreeze(model, "encoder")
    assert model.get_layer("stage1").trainable
    assert not stage.get_layer("stage_bn").trainable
    assert report.kept_frozen_bn == ("stage1/stage_bn",)
    vu.unfreeze(model, "encoder", train_bn=True)
    assert stage.get_layer("stage_bn").trainable
