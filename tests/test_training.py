"""Training loops on real ISBI crops: fine-tuning phases, checkpoints, resume and the NaN stop."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from vggunet import build_vgg_unet, layer_roles, load_model  # noqa: E402
from vggunet.losses import get_loss  # noqa: E402
from vggunet.training import TrainResult, finetune, prepare_phase2, train  # noqa: E402
from conftest import forward, one_block_unet, shallow_unet  # noqa: E402

STEPS = 2


small_unet = one_block_unet


@pytest.fixture(scope="module")
def isbi_crops(isbi_dir):
    """8 crops of 64×64 from 4 ISBI images: images (8, 64, 64, 3) raw, masks (8, 64, 64) int32."""
    from PIL import Image

    images, masks = [], []
    for i in range(4):
        image = np.asarray(Image.open(isbi_dir / "image" / f"{i}.png").convert("L"), "float32")
        label = np.asarray(Image.open(isbi_dir / "label" / f"{i}.png").convert("L"))
        for y, x in ((0, 0), (200, 300)):
            images.append(np.repeat(image[y:y + 64, x:x + 64, None], 3, axis=-1))
            masks.append((label[y:y + 64, x:x + 64] > 127).astype("int32"))
    return np.stack(images), np.stack(masks)


def dataset(images, masks):
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(2).take(STEPS)


def encoder_weight_ids(model):
    roles = layer_roles(model)
    return {id(w) for layer in model.layers if roles[layer.name] in ("encoder", "skip")
            for w in layer.weights}


class Snapshot(keras.callbacks.Callback):
    """Weights and trainable-weight ids at the start of training and at the end of epoch 1."""

    def __init__(self):
        super().__init__()
        self.trainable_ids = None
        self.after_phase1 = None

    def on_train_begin(self, logs=None):
        if self.trainable_ids is None:
            self.trainable_ids = {id(w) for w in self.model.trainable_weights}

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.after_phase1 = {l.name: [np.array(w) for w in l.get_weights()]
                                 for l in self.model.layers}


def weights_by_layer(model):
    return {l.name: [np.array(w) for w in l.get_weights()] for l in model.layers}


def changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_finetune_end_to_end(isbi_crops, tmp_path):
    images, masks = isbi_crops
    # Two encoder blocks: `top1` unfreezes one of them and leaves the other frozen.
    model = shallow_unet(blocks=2)
    loss_fn = get_loss("ce+dice", num_classes=2)
    loss_before = float(loss_fn(masks, forward(model, images)))
    initial = weights_by_layer(model)
    roles = layer_roles(model)
    snap = Snapshot()

    result = finetune(model, dataset(images, masks), dataset(images[:2], masks[:2]),
                      out_dir=tmp_path, phase1_epochs=1, phase2_epochs=1, phase1_lr=1e-3,
                      phase2_lr=1e-4, unfreeze="top1", jit_compile=False, verbose=0,
                      callbacks=[snap])

    assert isinstance(result, TrainResult)
    assert result.stopped_reason == "completed"
    assert result.epochs_completed == 2
    assert result.phase_boundaries == [0, 1]
    assert result.monitor == "val_mean_iou"
    assert len(result.history["loss"]) == 2 and len(result.history["val_mean_iou"]) == 2
    # Training reduced the loss on the training crops (fixed lr, 4 steps of Adam from a
    # random init whose loss is large: a robust margin).
    loss_after = float(loss_fn(masks, forward(model, images)))
    assert loss_after < loss_before

    # Phase 1: no encoder weight was trainable; encoder unchanged, decoder changed.
    assert snap.trainable_ids and not (snap.trainable_ids & encoder_weight_ids(model))
    enc = [n for n, r in roles.items() if r in ("encoder", "skip") and initial[n]]
    dec = [n for n, r in roles.items() if r in ("decoder", "bottleneck", "head") and initial[n]]
    assert enc and dec
    assert not any(changed(initial[n], snap.after_phase1[n]) for n in enc)
    assert all(changed(initial[n], snap.after_phase1[n]) for n in dec)
    # Phase 2: the top block (block2) trainable and trained; block1 still frozen.
    final = weights_by_layer(model)
    for name in enc:
        top = name.startswith("block2")
        assert model.get_layer(name).trainable == top, name
        assert changed(snap.after_phase1[name], final[name]) == top, name

    # Files exist and load.
    ckpt = tmp_path / "checkpoints"
    for name in ("last.keras", "best.keras"):
        loaded = load_model(ckpt / name)
        assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(forward(load_model(ckpt / "last.keras", compile=False),
                                       images[:1]),
                               forward(model, images[:1]), rtol=1e-5, atol=1e-6)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed_epochs"] == 2 and state["phase"] == 2 and state["finished"]
    assert [p["learning_rate"] for p in state["phases"]] == [1e-3, 1e-4]
    assert state["unfreeze"] == "top1"
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [float(r["phase"]) for r in rows] == [1.0, 2.0]
    assert not list(ckpt.glob(".*"))  # no temp files left behind
    # TensorBoard (on by default): one event file per phase for each of the train and
    # validation writers.
    events = sorted(p.parent.name
                    for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert events == ["train", "train", "validation", "validation"]


def test_phase2_keeps_encoder_batchnorm_frozen():
    model = build_vgg_unet("resnet50", input_shape=(64, 64, 3), num_classes=2, weights=None,
                           decoder_filters=(16, 8, 8, 8, 8), bottleneck_filters=16,
                           precision="float32")
    report = prepare_phase2(model, "top1")
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    top_bn = [l for l in bn if l.name.startswith("conv5")]
    assert top_bn and not any(l.trainable for l in bn)
    assert set(report.kept_frozen_bn) >= {l.name for l in top_bn}
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert all(l.trainable == l.name.startswith("conv5") for l in convs
               if layer_roles(model)[l.name] in ("encoder", "skip"))
    prepare_phase2(model, "top1", train_bn=True)
    assert all(l.trainable for l in top_bn)


@pytest.fixture(scope="module")
def resumed_run(isbi_crops, tmp_path_factory):
    """train 1 epoch, then train(epochs=2, resume=True): (first, second, out_dir)."""
    images, masks = isbi_crops
    out = tmp_path_factory.mktemp("resume")
    kwargs = dict(out_dir=out, learning_rate=1e-3, jit_compile=False, verbose=0,
                  steps_per_epoch=STEPS)
    first = train(small_unet(), dataset(images, masks).repeat(), epochs=1, **kwargs)
    second = train(small_unet(), dataset(images, masks).repeat(), epochs=2, resume=True,
                   **kwargs)
    return first, second, out


def test_resume_continues_epochs_and_optimizer(resumed_run, capsys):
    first, second, out = resumed_run
    assert first.epochs_completed == 1 and first.monitor == "mean_iou"
    assert second.epochs_completed == 2 and second.stopped_reason == "completed"
    assert int(second.model.optimizer.iterations.numpy()) == STEPS * 2
    assert int(load_model(out / "checkpoints" / "last.keras").optimizer.iterations.numpy()) \
        == STEPS * 2
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert len(second.history["loss"]) == 2
    assert json.loads((out / "state.json").read_text())["completed_epochs"] == 2


def test_resume_of_finished_run_does_nothing(resumed_run, isbi_crops, tmp_path):
    _, second, out = resumed_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = (copy / "checkpoints" / "last.keras").stat().st_mtime_ns
    images, masks = isbi_crops
    again = train(small_unet(), dataset(images, masks), out_dir=copy, epochs=2, resume=True,
                  jit_compile=False, verbose=0)
    assert again.epochs_completed == 2 and again.stopped_reason == "completed"
    assert (copy / "checkpoints" / "last.keras").stat().st_mtime_ns == before
    assert len(again.history["loss"]) == 2


def test_resume_with_other_model_raises(resumed_run, isbi_crops, tmp_path):
    _, _, out = resumed_run
    images, masks = isbi_crops
    other = small_unet(filters=16)
    with pytest.raises(ValueError, match="last.keras"):
        train(other, dataset(images, masks), out_dir=out, epochs=3, resume=True,
              jit_compile=False, verbose=0)


def test_nan_stops_and_keeps_finite_checkpoint(resumed_run, isbi_crops, tmp_path, capsys):
    _, _, out = resumed_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    images, masks = isbi_crops
    # NaN pixel weights make the loss NaN (the model itself sanitizes NaN pixels).
    weights = np.full(masks.shape, np.nan, dtype="float32")
    bad = tf.data.Dataset.from_tensor_slices((images, masks, weights)).batch(2).take(STEPS)
    before = weights_by_layer(load_model(copy / "checkpoints" / "last.keras", compile=False))
    result = train(small_unet(), bad.repeat(), out_dir=copy, epochs=3,
                   resume=True, jit_compile=False, verbose=0, steps_per_epoch=STEPS)
    assert result.stopped_reason == "nan"
    assert "NaN guard" in capsys.readouterr().out
    assert result.epochs_completed == 2
    last = load_model(copy / "checkpoints" / "last.keras", compile=False)
    after = weights_by_layer(last)
    assert all(np.all(np.isfinite(w)) for ws in after.values() for w in ws)
    assert not any(changed(before[n], after[n]) for n in before)
    assert all(np.all(np.isfinite(w)) for w in result.model.get_weights())
    state = json.loads((copy / "state.json").read_text())
    assert state["stopped_reason"] == "nan" and state["completed_epochs"] == 2


def test_no_resume_point_starts_fresh(tmp_path, capsys, isbi_crops):
    images, masks = isbi_crops
    result = train(small_unet(), dataset(images, masks), out_dir=tmp_path, epochs=0,
                   resume=True, jit_compile=False, verbose=0)
    assert "starting fresh" in capsys.readouterr().out
    assert result.epochs_completed == 0 and result.last_checkpoint is None


def test_early_stopping(isbi_crops, tmp_path):
    # With every layer frozen the loss cannot improve: patience 0 stops after the 2nd epoch.
    from vggunet import freeze

    images, masks = isbi_crops
    model = small_unet()
    freeze(model, "all")
    result = train(model, dataset(images[:2], masks[:2]), out_dir=tmp_path, epochs=5,
                   monitor="loss", early_stopping=0, jit_compile=False, verbose=0,
                   tensorboard=False)
    assert result.stopped_reason == "early_stopping"
    assert result.epochs_completed == 2 and result.monitor == "loss"
    assert result.best_value == pytest.approx(result.history["loss"][0])
    # No validation data: none of the empty val_* columns Keras's CSVLogger writes.
    assert "loss" in result.history and not any(k.startswith("val_") for k in result.history)
    again = train(small_unet(), dataset(images[:2], masks[:2]), out_dir=tmp_path, epochs=5,
                  monitor="loss", early_stopping=0, resume=True, verbose=0)
    assert again.stopped_reason == "early_stopping" and again.epochs_completed == 2


def test_decoder_batchnorms_use_bn_momentum_and_encoder_batchnorms_keep_theirs():
    model = build_vgg_unet("resnet50", input_shape=(64, 64, 3), num_classes=2, weights=None,
                           decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                           decoder_batchnorm=True, skip_batchnorm=True, precision="float32")
    roles = layer_roles(model)
    decoder_bns = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization)
                   and roles[layer.name] not in ("encoder", "skip")]
    # 2 bottleneck + 2 per stage x 5 + 4 skips (ResNet50 has none at full resolution) + the
    # bottleneck input.
    assert len(decoder_bns) == 2 + 10 + 4 + 1
    assert {layer.momentum for layer in decoder_bns} == {0.9}
    assert model.get_layer("conv1_bn").momentum == 0.99  # the encoder's own
    custom = build_vgg_unet("vgg16", input_shape=(32, 32, 3), weights=None,
                            decoder_filters=(8,) * 5, bottleneck_filters=8,
                            decoder_batchnorm=True, bn_momentum=0.5, precision="float32")
    assert custom.get_layer("decoder_stage3_conv2_bn").momentum == 0.5
    for bad in (1.0, -0.1, "0.9", True):
        with pytest.raises(ValueError, match="bn_momentum must be a number in \\[0, 1\\)"):
            build_vgg_unet("vgg16", input_shape=(32, 32, 3), weights=None,
                           decoder_batchnorm=True, bn_momentum=bad)


def test_train_recalibrates_batchnorm_before_validation_and_checkpoint(isbi_crops, tmp_path):
    from vggunet import recalibrate_batchnorm

    images, masks = isbi_crops
    model = small_unet(decoder_batchnorm=True, skip_batchnorm=True)
    # Unshuffled batches: every re-estimation sees the same 2 batches, so it is reproducible.
    data = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4)
    seen_at_validation = []

    class Spy(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen_at_validation.append(np.array(self.model.get_layer("bottleneck_input_bn")
                                               .moving_mean))

    result = train(model, data, data, out_dir=tmp_path / "run", epochs=1, learning_rate=1e-3,
                   metrics=("accuracy",), monitor="val_loss", tensorboard=False, verbose=0,
                   recalibrate_bn=2, callbacks=[Spy()])
    trained = np.array(model.get_layer("bottleneck_input_bn").moving_mean)
    checkpoint = load_model(result.last_checkpoint, compile=False)
    np.testing.assert_array_equal(
        np.array(checkpoint.get_layer("bottleneck_input_bn").moving_mean), trained)
    # Validation already saw the re-estimated statistics, not Keras's lagging average.
    np.testing.assert_allclose(seen_at_validation[0], trained, rtol=1e-5, atol=1e-6)
    expected = keras.models.clone_model(model)
    expected.set_weights(model.get_weights())
    recalibrate_batchnorm(expected, data, steps=2)
    np.testing.assert_allclose(
        trained, np.array(expected.get_layer("bottleneck_input_bn").moving_mean),
        rtol=1e-5, atol=1e-6)
    # Keras's own update (momentum 0.9 from mean 0, 2 steps) would be far from the batch mean.
    assert np.abs(trained).max() > 1.0
    with pytest.raises(ValueError, match="recalibrate_bn must be a positive integer, got 0"):
        train(model, data, out_dir=tmp_path / "bad", epochs=1, recalibrate_bn=0,
              tensorboard=False, verbose=0)
    assert not (tmp_path / "bad" / "log.csv").exists()


def test_recalibrate_batchnorm_sets_moving_stats_to_the_mean_of_batch_stats(isbi_crops):
    from vggunet import freeze, recalibrate_batchnorm

    images, _ = isbi_crops
    model = build_vgg_unet("resnet50", input_shape=(64, 64, 3), num_classes=2, weights=None,
                           decoder_filters=(8, 8, 8, 8, 8), bottleneck_filters=8,
                           decoder_batchnorm=True, precision="float32")
    freeze(model, "encoder")
    bn = model.get_layer("decoder_stage5_conv1_bn")
    encoder_bn = model.get_layer("conv1_bn")
    encoder_before = [np.array(w) for w in encoder_bn.weights]
    weights_before = [np.array(w) for w in model.trainable_weights]
    probe = keras.Model(model.input, bn.input)
    batches = [images[:4], images[4:]]
    expected_mean = np.mean([np.asarray(probe(b, training=True)).mean((0, 1, 2))
                             for b in batches], axis=0)

    assert recalibrate_batchnorm(model, [(b, None) for b in batches] * 3, steps=2) == 2
    np.testing.assert_allclose(np.array(bn.moving_mean), expected_mean, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.9  # restored (the decoder-side default)
    # Weights untouched; the frozen encoder's BatchNorm (inference mode) untouched too.
    for before, after in zip(weights_before, model.trainable_weights):
        np.testing.assert_array_equal(before, np.array(after))
    for before, after in zip(encoder_before, encoder_bn.weights):
        np.testing.assert_array_equal(before, np.array(after))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        recalibrate_batchnorm(model, batches, steps=0)
    with pytest.raises(ValueError, match="yielded no batch"):
        recalibrate_batchnorm(model, [], steps=None)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------


def test_cosine_lr_halves_the_mean_rate_and_never_reaches_zero():
    from vggunet.training import cosine_lr

    rates = [cosine_lr(e, 2, 23, 3e-4) for e in range(23)]
    assert rates[:2] == [3e-4, 3e-4]  # before the span: the base rate
    span = rates[2:]
    assert all(a > b for a, b in zip(span, span[1:]))
    assert span[0] == pytest.approx(3e-4 * 0.5 * (1 + np.cos(np.pi * 0.5 / 21)))
    assert 0 < span[-1] < 3e-6
    assert np.mean(span) == pytest.approx(1.5e-4, rel=1e-9)
    assert cosine_lr(23, 2, 23, 3e-4) == 3e-4  # after the span


def test_finetune_cosine_decays_phase2_per_epoch_and_survives_resume(isbi_crops, tmp_path):
    from vggunet.training import cosine_lr

    images, masks = isbi_crops
    kwargs = dict(out_dir=tmp_path, phase1_lr=1e-3, phase2_lr=4e-4, unfreeze="top1",
                  lr_schedule="cosine", jit_compile=False, verbose=0, steps_per_epoch=STEPS,
                  metrics=("accuracy",), tensorboard=False)
    data = dataset(images, masks).repeat()

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(small_unet(), data, phase1_epochs=1, phase2_epochs=3, callbacks=[Crash()],
                 **kwargs)
    result = finetune(small_unet(), data, phase1_epochs=1, phase2_epochs=3, resume=True,
                      **kwargs)
    assert result.epochs_completed == 4
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    logged = [float(r["learning_rate"]) for r in rows]
    expected = [1e-3] + [cosine_lr(e, 1, 4, 4e-4) for e in range(1, 4)]
    assert logged == pytest.approx(expected, rel=1e-5)
    phases = json.loads((tmp_path / "state.json").read_text())["phases"]
    assert [p["lr_schedule"] for p in phases] == ["constant", "cosine"]


def test_train_poly_schedule_sets_poly_lr_per_epoch(isbi_crops, tmp_path):
    from vggunet.training import poly_lr

    images, masks = isbi_crops
    train(small_unet(), dataset(images, masks).repeat(), out_dir=tmp_path, epochs=3,
          learning_rate=2e-3, lr_schedule="poly", steps_per_epoch=STEPS, jit_compile=False,
          verbose=0, metrics=("accuracy",), tensorboard=False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    logged = [float(r["learning_rate"]) for r in rows]
    assert logged == pytest.approx([poly_lr(e, 3, 2e-3) for e in range(3)], rel=1e-5)
    assert logged[0] == pytest.approx(2e-3) and logged[0] > logged[1] > logged[2] > 0


def test_unknown_lr_schedule_is_refused_before_training(isbi_crops, tmp_path):
    images, masks = isbi_crops
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \('constant', 'cosine', "
                                         r"'poly'\), got 'linear'"):
        train(small_unet(), dataset(images, masks), out_dir=tmp_path, epochs=1,
              lr_schedule="linear", verbose=0)
    assert not (tmp_path / "log.csv").exists()
