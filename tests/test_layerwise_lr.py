"""Warm-up as a phase setting, layer-wise learning rates, and the class-weight cap setting.

Rates are hand-computed; layer-wise rates are checked on the weights a step of plain SGD moves
(`w -= lr * multiplier * grad`, the gradient taken independently with a GradientTape).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import shallow_unet
from vggunet.errors import ArgumentError, SettingsMismatchError
from vggunet.training.resume import check_resume, settings_record
from vggunet.training.schedules import phase_schedule
from vggunet.training.settings import (
    FINETUNE_PHASE1, FINETUNE_PHASE2, CompileSettings, DataSettings, PhaseSettings, RunSettings,
)


# --------------------------------------------------------------------------- warm-up


def _rates(settings: PhaseSettings, start: int, end: int) -> list[float]:
    schedule = phase_schedule(settings, start, end)
    return [schedule.rate(e) for e in range(start, end)]


def test_warmup_epochs_start_every_schedule_with_a_linear_rise():
    poly = PhaseSettings(learning_rate=0.2, lr_schedule="poly", warmup_epochs=2)
    # Epochs 4..9: warm-up 0.02, 0.11; then 0.2 * (1 - t) ** 0.9 with t = 0, 1/4, 2/4, 3/4.
    np.testing.assert_allclose(_rates(poly, 4, 10),
                               [0.02, 0.11, 0.2, 0.2 * 0.75 ** 0.9, 0.2 * 0.5 ** 0.9,
                                0.2 * 0.25 ** 0.9], rtol=1e-12)
    cosine = dataclasses.replace(poly, lr_schedule="cosine", warmup_epochs=1)
    # Warm-up 0.02; then half a cosine over 4 epochs, at the middle of each.
    np.testing.assert_allclose(
        _rates(cosine, 0, 5),
        [0.02] + [0.1 * (1 + np.cos(np.pi * (k + 0.5) / 4)) for k in range(4)], rtol=1e-12)
    constant = dataclasses.replace(poly, lr_schedule="constant", warmup_epochs=4)
    np.testing.assert_allclose(_rates(constant, 0, 6),
                               [0.02, 0.065, 0.11, 0.155, 0.2, 0.2], rtol=1e-12)
    assert phase_schedule(dataclasses.replace(constant, warmup_epochs=0), 0, 6) is None
    # Without a warm-up the schedules are those of before.
    np.testing.assert_allclose(_rates(dataclasses.replace(poly, warmup_epochs=0), 0, 2),
                               [0.2, 0.2 * 0.5 ** 0.9], rtol=1e-12)
    assert PhaseSettings().warmup_epochs == 0 and PhaseSettings().layerwise_lr is None


def test_phase_settings_check_warmup_and_layerwise_values():
    with pytest.raises(ArgumentError, match=r"warmup_epochs must be an integer >= 0, got -1"):
        PhaseSettings(warmup_epochs=-1)
    for bad in (0, 1.5):
        with pytest.raises(ArgumentError, match=rf"layerwise_lr must be .*got {bad}"):
            PhaseSettings(layerwise_lr=bad)
    assert PhaseSettings(layerwise_lr=1).layerwise_lr == 1.0


def _state(started: int) -> dict:
    phases = [{"phase": n, "name": "x", "start_epoch": 5 * (n - 1), "epochs": 5, "ended": None}
              for n in range(1, started + 1)]
    return {"version": 2, "kind": "finetune", "monitor": "val_mean_iou", "mode": "max",
            "completed_epochs": 6, "phases": phases,
            "settings": settings_record(CompileSettings(), [FINETUNE_PHASE1, FINETUNE_PHASE2],
                                        RunSettings(), DataSettings())}


def test_resume_refuses_warmup_or_layerwise_changes_of_a_phase_under_way():
    second = dataclasses.replace(FINETUNE_PHASE2, warmup_epochs=2, layerwise_lr=0.5)
    request = settings_record(CompileSettings(), [FINETUNE_PHASE1, second], RunSettings(),
                              DataSettings(max_weight=5.0))
    # Phase 2 pending: applied, and named; the cap is a data setting, always applied.
    changes = check_resume(_state(1), "finetune", request, "val_mean_iou", "max")
    assert [str(c) for c in changes] == ["phase 2 layerwise_lr None -> 0.5",
                                         "phase 2 warmup_epochs 0 -> 2",
                                         "max_weight None -> 5.0"]
    with pytest.raises(SettingsMismatchError,
                       match=r"phase 2 layerwise_lr: stored None, requested 0\.5 \(phase 2 "
                             r"has started\); phase 2 warmup_epochs: stored 0, requested 2"):
        check_resume(_state(2), "finetune", request, "val_mean_iou", "max")


# --------------------------------------------------------------------------- layer-wise rates


def test_multipliers_follow_the_encoder_stages():
    from vggunet.training.layerwise import layerwise_multipliers

    model = shallow_unet()
    multipliers = layerwise_multipliers(model, 0.25)
    # Stage 1 of 2 at 0.25 ** 1; stage 2 (the top), bottleneck, decoder and head at 1.
    assert multipliers == {"block1_conv1/kernel": 0.25, "block1_conv1/bias": 0.25,
                           "block1_conv2/kernel": 0.25, "block1_conv2/bias": 0.25}
    assert layerwise_multipliers(model, 1.0) == {}
    with pytest.raises(ArgumentError, match=r"layerwise_lr must be a number in \(0, 1\], got 2"):
        layerwise_multipliers(model, 2)


def test_an_unfrozen_lower_block_moves_by_the_smaller_rate():
    from vggunet.training import compile_model, prepare_phase2
    from vggunet.training.layerwise import apply_layerwise_lr
    from vggunet.transfer.freezing import freeze, recompile

    model = shallow_unet()
    freeze(model, "encoder")
    compile_model(model, loss="ce", optimizer="sgd", learning_rate=0.1, metrics=[],
                  jit_compile=False)
    prepare_phase2(model, "encoder")  # frozen, then unfrozen: phase 2 of fine-tuning
    recompile(model, learning_rate=0.1)
    apply_layerwise_lr(model, 0.25)
    assert type(model.optimizer).__name__ == "LayerwiseSGD"

    rng = np.random.default_rng(0)
    x = (rng.random((2, 16, 16, 3)) * 255).astype("float32")
    y = rng.integers(0, 2, (2, 16, 16)).astype("int32")
    weights = {w.path: w for w in model.trainable_weights}
    with tf.GradientTape() as tape:
        loss = model.loss(y, model(x, training=True))
    grads = dict(zip(weights, tape.gradient(loss, list(weights.values()))))
    before = {path: w.numpy() for path, w in weights.items()}
    model.train_on_batch(x, y)
    decoder = next(p for p in weights if p.startswith("decoder") and p.endswith("kernel"))
    for path, scale in [("block1_conv1/kernel", 0.25), ("block1_conv2/kernel", 0.25),
                        ("block2_conv1/kernel", 1.0), (decoder, 1.0)]:
        moved = weights[path].numpy() - before[path]
        np.testing.assert_allclose(moved, -0.1 * scale * grads[path].numpy(), rtol=2e-3,
                                   atol=1e-7, err_msg=path)
        assert np.abs(moved).max() > 0, path


def test_layerwise_optimizer_refuses_other_classes_and_keeps_its_config():
    from vggunet.training.layerwise import layerwise_optimizer

    class Custom(keras.optimizers.SGD):
        pass

    with pytest.raises(ArgumentError, match=r"needs one of Keras's optimizers \(.*SGD.*\), "
                                            r"got Custom"):
        layerwise_optimizer(Custom(), {})
    adam = layerwise_optimizer(keras.optimizers.Adam(3e-4, beta_1=0.8), {"a/kernel": 0.5})
    again = layerwise_optimizer(adam, {"b/kernel": 0.1})
    assert type(again) is type(adam)
    config = again.get_config()
    assert (config["lr_multipliers"], config["beta_1"]) == ({"b/kernel": 0.1}, 0.8)
    assert config["learning_rate"] == pytest.approx(3e-4)


def test_adam_takes_its_first_step_at_the_scaled_rate():
    from vggunet.training.layerwise import layerwise_optimizer

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="a"),
                              keras.layers.Dense(1, name="b")])
    low = model.weights[0]
    model.compile(optimizer=layerwise_optimizer(keras.optimizers.Adam(0.1), {low.path: 0.25}),
                  loss="mse")
    before = [w.numpy() for w in model.weights]
    model.train_on_batch(np.ones((4, 2), "float32"), np.ones((4, 1), "float32"))
    # Adam's first step moves every weight by its rate (m / sqrt(v) = sign of the gradient).
    moved = [np.abs(w.numpy() - b) for w, b in zip(model.weights, before)]
    np.testing.assert_allclose(moved[0], 0.025, rtol=1e-3)
    for step in moved[1:]:
        np.testing.assert_allclose(step, 0.1, rtol=1e-3)


def test_finetune_with_warmup_and_layerwise_rates_saves_loads_and_resumes(tmp_path):
    from vggunet.saving import load_model
    from vggunet.training import finetune

    rng = np.random.default_rng(1)
    x = (rng.random((2, 16, 16, 3)) * 255).astype("float32")
    y = rng.integers(0, 2, (2, 16, 16)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    kwargs = dict(out_dir=tmp_path / "run", phase1_epochs=1, phase2_epochs=2, phase1_lr=0.01,
                  phase2_lr=0.02, unfreeze="encoder", lr_schedule="poly", warmup_epochs=1,
                  layerwise_lr=0.5, optimizer="sgd", loss="ce", metrics=[],
                  tensorboard=False, verbose=0, jit_compile=False)
    result = finetune(shallow_unet(filters=4), data, **kwargs)
    # Phase 2 (epochs 2-3): warm-up at a tenth of 0.02, then the poly curve's start.
    np.testing.assert_allclose(result.history["learning_rate"], [0.01, 0.002, 0.02],
                               rtol=1e-6)
    loaded = load_model(result.last_checkpoint)
    assert type(loaded.optimizer).__name__ == "LayerwiseSGD"
    assert loaded.optimizer.lr_multipliers == {
        f"block1_conv{i}/{w}": 0.5 for i in (1, 2) for w in ("kernel", "bias")}
    assert set(loaded.optimizer.lr_multipliers) <= {w.path for w in loaded.weights}
    assert int(loaded.optimizer.iterations.numpy()) == 2  # phase 2's optimizer, 2 steps

    with pytest.raises(SettingsMismatchError, match=r"phase 2 layerwise_lr: stored 0\.5, "
                                                    r"requested 0\.25"):
        finetune(shallow_unet(filters=4), data, resume=True, **{**kwargs, "layerwise_lr": 0.25})
    resumed = finetune(shallow_unet(filters=4), data, resume=True, **{**kwargs, "phase2_epochs": 3})
    assert type(resumed.model.optimizer).__name__ == "LayerwiseSGD"
    assert resumed.epochs_completed == 4
    assert resumed.history["learning_rate"][-1] == pytest.approx(0.02 * 0.5 ** 0.9)


# --------------------------------------------------------------------------- the weight cap


def test_max_weight_caps_the_pipeline_class_weights(tmp_path):
    from PIL import Image

    from vggunet.data import make_dataset

    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    mask = np.zeros((8, 8), "uint8")
    mask[0, :2] = 1  # class 1: 2 of 64 pixels
    Image.fromarray(np.full((8, 8, 3), 100, "uint8")).save(tmp_path / "im" / "a.png")
    Image.fromarray(mask).save(tmp_path / "ma" / "a.png")
    common = dict(num_classes=2, batch_size=1, shuffle=False, sample_weights="inverse_frequency")
    _, _, plain = next(iter(make_dataset(tmp_path / "im", tmp_path / "ma", **common)))
    _, _, capped = next(iter(make_dataset(tmp_path / "im", tmp_path / "ma", max_weight=4,
                                          **common)))
    # inverse frequency: w_c = 64 / (2 * n_c): 32/62 for class 0, 16 for class 1, capped to 4.
    assert np.unique(plain.numpy()).tolist() == pytest.approx([32 / 62, 16])
    assert np.unique(capped.numpy()).tolist() == pytest.approx([32 / 62, 4])
    with pytest.raises(ArgumentError, match=r"max_weight=4 caps the class weights of "
                                            r"sample_weights; give sample_weights too"):
        make_dataset(tmp_path / "im", tmp_path / "ma", num_classes=2, max_weight=4)
