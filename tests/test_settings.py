"""Training settings: one source of defaults for the API and the CLI, and the resume rule.

No training here: the resume rule is a function of the recorded `state.json` and the request,
checked on state dicts as a run writes them (and on the version-1 file of the last release).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from vggunet.errors import ArgumentError, SettingsMismatchError
from vggunet.training.resume import check_resume, phase_status, settings_record
from vggunet.training.settings import (
    FINETUNE_PHASE1, FINETUNE_PHASE2, TRAIN_PHASE, CompileSettings, DataSettings, PhaseSettings,
    RunSettings,
)

LEGACY_STATE = Path(__file__).parent / "fixtures" / "legacy_86619a9" / "checkpoint_state.json"


def _subparser(name: str) -> argparse.ArgumentParser:
    from vggunet.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_cli_defaults_equal_the_api_defaults():
    from vggunet.cli.data_args import data_settings
    from vggunet.cli.train import training_settings
    from vggunet.training import finetune, train

    tuned = _subparser("finetune").parse_args(["--data", "d", "--out", "o"])
    api = inspect.signature(finetune).parameters
    for flag, keyword in [("phase1_epochs", "phase1_epochs"), ("phase2_epochs", "phase2_epochs"),
                          ("phase1_lr", "phase1_lr"), ("phase2_lr", "phase2_lr"),
                          ("unfreeze", "unfreeze"), ("train_bn", "train_bn"),
                          ("lr_schedule", "lr_schedule"), ("warmup_epochs", "warmup_epochs"),
                          ("layerwise_lr", "layerwise_lr"), ("lr_per_step", "lr_per_step")]:
        assert getattr(tuned, flag) == api[keyword].default, flag
    # The lead's decision (ISBI: 1e-4..3e-4 suits phase 2, 1e-5 barely moves).
    assert (tuned.phase2_lr, tuned.phase2_epochs) == (1e-4, 10)
    assert (api["phase2_lr"].default, api["phase2_epochs"].default) == (1e-4, 10)
    assert (FINETUNE_PHASE1.epochs, FINETUNE_PHASE1.learning_rate) == (5, 1e-3)

    shared = training_settings(tuned)
    assert shared["compile_settings"] == CompileSettings()
    # The CLI prints one line per epoch (verbose 2) where the API shows Keras's bar (1).
    assert shared["run_settings"] == dataclasses.replace(RunSettings(), verbose=2)
    assert shared["resume"] is api["resume"].default
    for cls in (CompileSettings, RunSettings):
        for field in dataclasses.fields(cls):
            assert api[field.name].default == getattr(cls(), field.name), field.name
    assert RunSettings().monitor == "val_mean_iou" and RunSettings().tensorboard is True
    assert data_settings(tuned) == DataSettings()

    plain = _subparser("train").parse_args(["--data", "d", "--out", "o"])
    one = inspect.signature(train).parameters
    assert plain.lr == one["learning_rate"].default == TRAIN_PHASE.learning_rate
    assert plain.lr_schedule == one["lr_schedule"].default
    for name in ("warmup_epochs", "layerwise_lr", "lr_per_step"):
        assert getattr(plain, name) == one[name].default == getattr(TRAIN_PHASE, name), name
    assert plain.epochs == TRAIN_PHASE.epochs
    assert training_settings(plain) == {**shared, "out_dir": "o"}


def test_warmup_layerwise_and_weight_cap_flags_reach_the_settings():
    from vggunet.cli.data_args import data_settings

    args = _subparser("finetune").parse_args(
        ["--data", "d", "--out", "o", "--warmup-epochs", "2", "--layerwise-lr", "0.3",
         "--sample-weights", "median_frequency", "--max-weight", "5"])
    assert (args.warmup_epochs, args.layerwise_lr) == (2, 0.3)
    assert data_settings(args) == DataSettings(sample_weights="median_frequency",
                                               max_weight=5.0)
    assert DataSettings().max_weight is None
    with pytest.raises(SystemExit):
        _subparser("train").parse_args(["--data", "d", "--out", "o", "--max-weight", "0"])


def test_cli_help_states_the_api_defaults_and_tensorboard_can_be_turned_off():
    text = " ".join(_subparser("finetune").format_help().split())
    assert ("metric that picks the best checkpoint and drives early stopping "
            "(default val_mean_iou;") in text
    assert "--tensorboard, --no-tensorboard" in text
    assert "phase 2 learning rate (default 0.0001)" in text
    off = _subparser("train").parse_args(["--data", "d", "--out", "o", "--no-tensorboard"])
    assert off.tensorboard is False


def test_settings_check_their_values_and_name_the_keyword():
    with pytest.raises(ArgumentError, match=r"phase2_lr must be a number > 0, got 0\."):
        PhaseSettings.from_arguments({"learning_rate": "phase2_lr"}, learning_rate=0)
    with pytest.raises(ArgumentError, match=r"epochs must be an integer >= 0, got -1\."):
        PhaseSettings(epochs=-1)
    with pytest.raises(ArgumentError, match=r"mode must be one of \('auto', 'min', 'max'\), "
                                            r"got 'maximum'\."):
        RunSettings(mode="maximum")
    with pytest.raises(ArgumentError, match=r"Did you mean 'cosine'\?"):
        PhaseSettings(lr_schedule="cosin")
    assert CompileSettings(metrics="miou, dice").metrics == ("miou", "dice")
    assert CompileSettings(class_weights=[1, 2]).class_weights == (1.0, 2.0)
    assert RunSettings(monitor=None).monitor == "val_mean_iou"


def test_train_refuses_an_unknown_keyword_before_anything_runs(tmp_path):
    from vggunet.training import finetune, train

    # A TypeError too, as Python's own unexpected-keyword error is.
    with pytest.raises(TypeError, match=r"train\(\) got an unexpected keyword argument "
                                        r"'los'\. Did you mean 'loss'\?") as info:
        train(None, None, out_dir=tmp_path / "a", epochs=1, los="dice")
    assert isinstance(info.value, ArgumentError)
    with pytest.raises(ArgumentError, match=r"phase2_epochs must be an integer >= 0, got -2"):
        finetune(None, None, out_dir=tmp_path / "b", phase2_epochs=-2)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------ the resume rule


def _finetune_state(started: int, ended_early: bool = False) -> dict:
    """A finetune run's state.json after `started` phases began (5 + 10 epochs, defaults)."""
    phases = [{"phase": n, "name": "x", "start_epoch": 5 * (n - 1), "epochs": 5,
               "ended": None} for n in range(1, started + 1)]
    if ended_early:
        phases[-1]["ended"] = "early_stopping"
    return {"version": 2, "kind": "finetune", "monitor": "val_mean_iou", "mode": "max",
            "completed_epochs": 3, "phases": phases,
            "settings": settings_record(CompileSettings(), [FINETUNE_PHASE1, FINETUNE_PHASE2],
                                        RunSettings(), DataSettings())}


def _request(compile=CompileSettings(), phases=(FINETUNE_PHASE1, FINETUNE_PHASE2),
             run=RunSettings(), data=DataSettings()) -> dict:
    return settings_record(compile, list(phases), run, data)


def test_phase_status():
    assert phase_status(_finetune_state(1), 1) == "under way"
    assert phase_status(_finetune_state(1), 2) == "pending"
    assert phase_status(_finetune_state(2), 1) == "ended"
    assert phase_status(_finetune_state(1, ended_early=True), 1) == "ended"


def test_safe_changes_are_applied_and_named():
    request = _request(
        phases=(dataclasses.replace(FINETUNE_PHASE1, epochs=8),
                dataclasses.replace(FINETUNE_PHASE2, learning_rate=3e-4, unfreeze="top3")),
        run=RunSettings(tensorboard=False, early_stopping=4, verbose=0),
        data=DataSettings(batch_size=8))
    changes = check_resume(_finetune_state(1), "finetune", request, "val_mean_iou", "max")
    assert [str(c) for c in changes] == [
        "phase 1 epochs 5 -> 8", "phase 2 learning_rate 0.0001 -> 0.0003",
        "phase 2 unfreeze 'top2' -> 'top3'", "early_stopping None -> 4",
        "tensorboard True -> False", "verbose 1 -> 0", "batch_size 4 -> 8"]
    assert all(c.safe for c in changes)
    assert check_resume(_finetune_state(2), "finetune", _request(), "val_mean_iou", "max") == []
    jit = _request(compile=CompileSettings(jit_compile=False))
    assert [str(c) for c in check_resume(_finetune_state(1), "finetune", jit, "val_mean_iou",
                                         "max")] == ["jit_compile 'auto' -> False"]


def test_unsafe_changes_are_refused_with_every_difference_named():
    request = _request(
        compile=CompileSettings(loss="dice", class_weights=(1.0, 2.0)),
        phases=(dataclasses.replace(FINETUNE_PHASE1, epochs=6, learning_rate=1e-2),
                dataclasses.replace(FINETUNE_PHASE2, train_bn=True)))
    with pytest.raises(SettingsMismatchError) as info:
        check_resume(_finetune_state(2), "finetune", request, "val_loss", "min", "runs/a")
    message = str(info.value)
    assert message.startswith("Cannot resume the run in 'runs/a' with these settings: ")
    for part in ("monitor: stored 'val_mean_iou', requested 'val_loss'",
                 "mode: stored 'max', requested 'min'",
                 "class_weights: stored None, requested [1.0, 2.0]",
                 "loss: stored 'ce+dice', requested 'dice'",
                 "phase 1 epochs: stored 5, requested 6 (phase 1 has ended)",
                 "phase 1 learning_rate: stored 0.001, requested 0.01 (phase 1 has ended)",
                 "phase 2 train_bn: stored False, requested True (phase 2 has started)"):
        assert part in message, part
    assert isinstance(info.value, ValueError)
    with pytest.raises(SettingsMismatchError, match="kind: stored 'finetune', requested 'train'"):
        check_resume(_finetune_state(1), "train", _request(phases=(TRAIN_PHASE,)),
                     "val_mean_iou", "max")


def test_legacy_version_1_state_compares_what_it_recorded():
    state = json.loads(LEGACY_STATE.read_text())
    assert state["version"] == 1 and "settings" not in state
    longer = _request(compile=CompileSettings(loss="dice"),
                      phases=(dataclasses.replace(TRAIN_PHASE, epochs=3),), data=None)
    # Version 1 recorded no compile settings: the loss cannot be compared, epochs can.
    changes = check_resume(state, "train", longer, "mean_iou", "max")
    assert [str(c) for c in changes] == ["epochs 2 -> 3"]
    faster = _request(phases=(dataclasses.replace(TRAIN_PHASE, epochs=3, learning_rate=0.1),))
    with pytest.raises(SettingsMismatchError,
                       match=r"learning_rate: stored 0\.001, requested 0\.1 \(phase 1 has "
                             r"started\)"):
        check_resume(state, "train", faster, "mean_iou", "max")
