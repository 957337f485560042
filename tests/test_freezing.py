"""freeze / unfreeze by count, role, prefixes, up_to, predicate; BatchNorm rule; recompile."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import vggunet as vu
from vggunet.inspect import layer_roles


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
    model = _small_vgg()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    vu.freeze(model, "encoder")
    vu.recompile(model)
    enc_before = model.get_layer("block1_conv1").get_weights()[0].copy()
    dec_before = model.get_layer("decoder_stage5_conv2").get_weights()[0].copy()
    rng = np.random.default_rng(0)
    x = rng.random((2, 64, 64, 3)).astype("float32") * 255
    y = rng.integers(0, 2, (2, 64, 64))
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], enc_before)
    assert not np.array_equal(model.get_layer("decoder_stage5_conv2").get_weights()[0], dec_before)
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
