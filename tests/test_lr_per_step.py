"""Learning rates set before every batch (`lr_per_step`): the curve over steps, what the
optimizer holds at each batch of a real `train`/`finetune` run, data of unknown length, the CLI
flag, and resuming with state files that predate the setting. Rates are hand-computed."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import one_block_unet
from vggunet.errors import SettingsMismatchError
from vggunet.training.resume import check_resume, settings_record
from vggunet.training.schedules import CosineDecayEpochs, PolyDecayEpochs, phase_schedule
from vggunet.training.settings import (
    FINETUNE_PHASE1, FINETUNE_PHASE2, CompileSettings, DataSettings, PhaseSettings, RunSettings,
)


class RateLog(keras.callbacks.Callback):
    """The rate each batch trained at (read at its end: on data of unknown length Keras begins
    one more batch per epoch, which never comes)."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def _data(n: int, known_length: bool = True) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = (rng.random((n, 8, 8, 3)) * 255).astype("float32")
    y = rng.integers(0, 2, (n, 8, 8)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    return data if known_length else data.filter(lambda a, b: True)  # cardinality unknown


_FAST = dict(optimizer="sgd", loss="ce", metrics=[], tensorboard=False, verbose=0,
             jit_compile=False)


def test_per_step_curves_run_over_the_phase_batches():
    poly = PolyDecayEpochs(1.0, 4, 6, warmup=1, per_step=True)
    # 2 epochs of 3 steps: warm-up over 3 steps from 0.1, then (1 - t) ** 0.9 over 3 steps.
    np.testing.assert_allclose([poly.rate_at(s, 3) for s in range(6)],
                               [0.1, 0.4, 0.7, 1.0, (2 / 3) ** 0.9, (1 / 3) ** 0.9], rtol=1e-12)
    # The per-epoch curve is the same function at one step per epoch.
    np.testing.assert_allclose([poly.rate(e) for e in (4, 5)], [0.1, 1.0], rtol=1e-12)
    cosine = CosineDecayEpochs(2.0, 0, 2, per_step=True)
    # Half a cosine over 4 steps, at the middle of each.
    np.testing.assert_allclose([cosine.rate_at(s, 2) for s in range(4)],
                               [1 + np.cos(np.pi * (s + 0.5) / 4) for s in range(4)],
                               rtol=1e-12)
    settings = PhaseSettings(lr_schedule="constant", warmup_epochs=1, lr_per_step=True)
    assert phase_schedule(settings, 0, 3).per_step is True
    assert phase_schedule(dataclasses.replace(settings, lr_per_step=False), 0, 3).per_step is False
    assert PhaseSettings().lr_per_step is False


def test_train_sets_the_rate_before_every_batch(tmp_path):
    from vggunet.training import train

    log = RateLog()
    result = train(one_block_unet(), _data(6), out_dir=tmp_path / "run", epochs=2,
                   learning_rate=0.02, lr_schedule="poly", warmup_epochs=1, lr_per_step=True,
                   callbacks=[log], **_FAST)
    expected = [0.002, 0.008, 0.014, 0.02, 0.02 * (2 / 3) ** 0.9, 0.02 * (1 / 3) ** 0.9]
    np.testing.assert_allclose(log.rates, expected, rtol=1e-6)
    # log.csv records the rate each epoch's last batch trained at.
    np.testing.assert_allclose(result.history["learning_rate"], expected[2::3], rtol=1e-6)

    # The same run per epoch: one rate per epoch.
    per_epoch = RateLog()
    train(one_block_unet(), _data(6), out_dir=tmp_path / "epochs", epochs=2, learning_rate=0.02,
          lr_schedule="poly", warmup_epochs=1, callbacks=[per_epoch], **_FAST)
    np.testing.assert_allclose(per_epoch.rates, [0.002] * 3 + [0.02] * 3, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_unknown_length_data_goes_per_step_from_the_second_epoch(tmp_path):
    from vggunet.training import train

    log = RateLog()
    train(one_block_unet(), _data(4, known_length=False), out_dir=tmp_path / "run", epochs=3,
          learning_rate=1.0, lr_schedule="cosine", lr_per_step=True, callbacks=[log], **_FAST)
    first = np.cos(np.pi * 0.5 / 3)  # epoch 0 at its middle, as per epoch
    steps = [0.5 * (1 + np.cos(np.pi * (s + 0.5) / 6)) for s in range(2, 6)]
    np.testing.assert_allclose(log.rates, [0.5 * (1 + first)] * 2 + steps, rtol=1e-6)


def test_finetune_applies_it_to_phase_2_and_resume_checks_it(tmp_path):
    from vggunet.training import finetune

    log = RateLog()
    kwargs = dict(out_dir=tmp_path / "run", phase1_epochs=1, phase2_epochs=1, phase1_lr=0.01,
                  phase2_lr=0.04, unfreeze="encoder", lr_schedule="poly", warmup_epochs=1,
                  lr_per_step=True, **_FAST)
    finetune(one_block_unet(), _data(4), callbacks=[log], **kwargs)
    # Phase 1 holds its rate; phase 2 is all warm-up: 2 steps from a tenth of 0.04.
    np.testing.assert_allclose(log.rates, [0.01, 0.01, 0.004, 0.022], rtol=1e-6)
    with pytest.raises(SettingsMismatchError,
                       match=r"phase 2 lr_per_step: stored True, requested False"):
        finetune(one_block_unet(), _data(4), resume=True,
                 **{**kwargs, "lr_per_step": False, "phase2_epochs": 2})


def _state(started: int, drop: tuple[str, ...]) -> dict:
    record = settings_record(CompileSettings(), [FINETUNE_PHASE1, FINETUNE_PHASE2],
                             RunSettings(), DataSettings())
    record["phases"] = [{k: v for k, v in p.items() if k not in drop} for p in record["phases"]]
    phases = [{"phase": n, "name": "x", "start_epoch": 5 * (n - 1), "epochs": 5, "ended": None}
              for n in range(1, started + 1)]
    return {"version": 2, "kind": "finetune", "monitor": "val_mean_iou", "mode": "max",
            "completed_epochs": 6, "phases": phases, "settings": record}


def test_a_state_file_that_predates_a_phase_setting_counts_its_default():
    later = ("warmup_epochs", "layerwise_lr", "lr_per_step")
    same = settings_record(CompileSettings(), [FINETUNE_PHASE1, FINETUNE_PHASE2],
                           RunSettings(), DataSettings())
    assert check_resume(_state(2, later), "finetune", same, "val_mean_iou", "max") == []
    stepped = settings_record(
        CompileSettings(), [FINETUNE_PHASE1, dataclasses.replace(FINETUNE_PHASE2,
                                                                  lr_per_step=True)],
        RunSettings(), DataSettings())
    changes = check_resume(_state(1, later), "finetune", stepped, "val_mean_iou", "max")
    assert [str(c) for c in changes] == ["phase 2 lr_per_step False -> True"]
    with pytest.raises(SettingsMismatchError,
                       match=r"phase 2 lr_per_step: stored False, requested True \(phase 2 "
                             r"has started\)"):
        check_resume(_state(2, later), "finetune", stepped, "val_mean_iou", "max")


def test_the_cli_flag_reaches_the_settings():
    import argparse

    from vggunet.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "finetune"):
        parser = sub.choices[command]
        assert parser.parse_args(["--data", "d", "--out", "o", "--lr-per-step"]).lr_per_step
        assert not parser.parse_args(["--data", "d", "--out", "o"]).lr_per_step
