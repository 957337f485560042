"""Named recipes (`vggunet.training.recipes`): their values reach the settings through the API
and the CLI, explicit keywords and flags win, unknown names get a did-you-mean."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from vggunet.errors import ArgumentError
from vggunet.training.recipes import RECIPES, get_recipe, recipe_keywords
from vggunet.training.settings import (
    FINETUNE_PHASE1, CompileSettings, DataSettings, PhaseSettings, RunSettings,
)


def _subparser(name: str) -> argparse.ArgumentParser:
    from vggunet.cli.recipe_args import _command_parser

    return _command_parser(name)


def test_every_recipe_is_valid_settings():
    fields = {cls: {f.name for f in dataclasses.fields(cls)}
              for cls in (CompileSettings, RunSettings, DataSettings, PhaseSettings)}
    for name, recipe in RECIPES.items():
        # Each part builds its dataclass, so the values pass the settings' own checks.
        assert set(recipe.compile) <= fields[CompileSettings], name
        assert set(recipe.run) <= fields[RunSettings], name
        assert set(recipe.data) <= fields[DataSettings], name
        CompileSettings(**recipe.compile), RunSettings(**recipe.run), DataSettings(**recipe.data)
        for phase in (recipe.phase1, recipe.phase2, recipe.train):
            PhaseSettings(**phase)
        assert set(recipe.phase1) <= {"epochs", "learning_rate"}, name
        assert not {"epochs", "crop", "size"} & {*recipe.phase2, *recipe.train, *recipe.data}
    with pytest.raises(TypeError):
        get_recipe("photos").data["augment"] = "flip"  # read-only: one source of the values


def test_recipe_keywords_name_the_targets_keywords():
    photos = recipe_keywords("photos", "finetune")
    assert photos == {"loss": "ce", "ignore_index": 255, "phase1_lr": 1e-3, "phase2_lr": 3e-4,
                      "unfreeze": "encoder", "lr_schedule": "poly", "warmup_epochs": 1,
                      "layerwise_lr": 0.5}
    assert recipe_keywords("photos", "train") == {
        "loss": "ce", "ignore_index": 255, "lr_schedule": "poly", "warmup_epochs": 1,
        "layerwise_lr": 0.5}
    assert recipe_keywords("em", "data") == {"augment": "flip,rot90",
                                             "sample_weights": "median_frequency"}
    assert recipe_keywords("em", "model") == {"decoder_batchnorm": True, "skip_batchnorm": True}
    photos["loss"] = "dice"  # a fresh dict each call
    assert recipe_keywords("photos", "finetune")["loss"] == "ce"


def test_unknown_recipe_names_get_a_did_you_mean(tmp_path):
    from vggunet.training import finetune

    with pytest.raises(ArgumentError, match=r"recipe must be one of \('em', 'photos'\), got "
                                            r"'photo'\. Did you mean 'photos'\?"):
        get_recipe("photo")
    with pytest.raises(ArgumentError, match="Did you mean 'em'"):
        finetune(None, None, out_dir=tmp_path / "r", recipe="EM ")
    with pytest.raises(ArgumentError, match="target must be one of"):
        recipe_keywords("em", "evaluate")
    parser = _subparser("finetune")
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "d", "--out", "o", "--recipe", "foto"])
    assert not (tmp_path / "r").exists()


def _captured_run(monkeypatch):
    """Replaces the run engine: returns what train/finetune would run, without Keras work."""
    import vggunet.training.api as api

    seen = {}

    def fake_run(kind, model, train_data, val_data, phases, out_dir, options, extra_state):
        seen.update(kind=kind, phases=[p.settings for p in phases], options=options,
                    extra=extra_state)
        return seen

    monkeypatch.setattr(api, "_run", fake_run)
    return seen


def test_api_recipe_fills_in_what_the_caller_left_and_explicit_keywords_win(monkeypatch, tmp_path):
    from vggunet.training import finetune, train

    seen = _captured_run(monkeypatch)
    finetune(None, None, out_dir=tmp_path, recipe="photos", phase2_lr=5e-4, metrics="miou")
    first, second = seen["phases"]
    assert (first.learning_rate, first.epochs) == (1e-3, FINETUNE_PHASE1.epochs)
    assert second == PhaseSettings(epochs=10, learning_rate=5e-4, lr_schedule="poly",
                                   unfreeze="encoder", warmup_epochs=1, layerwise_lr=0.5)
    assert seen["options"].compile == CompileSettings(loss="ce", ignore_index=255,
                                                      metrics="miou")
    assert seen["extra"]["recipe"] == "photos" and seen["extra"]["unfreeze"] == "encoder"

    # A settings object given explicitly keeps its fields; the recipe fills the others.
    finetune(None, None, out_dir=tmp_path, recipe="em",
             compile_settings=CompileSettings(loss="dice"), unfreeze="top2")
    assert seen["options"].compile.loss == "dice"
    assert seen["options"].run.recalibrate_bn == 8
    assert seen["phases"][1].unfreeze == "top2" and seen["phases"][1].learning_rate == 3e-4

    train(None, None, out_dir=tmp_path, epochs=3, recipe="em", loss="ce+dice")
    (phase,) = seen["phases"]
    assert phase == PhaseSettings(epochs=3, learning_rate=1e-4)
    assert seen["options"].compile.loss == "ce+dice" and seen["options"].run.recalibrate_bn == 8

    train(None, None, out_dir=tmp_path, epochs=2)  # no recipe: the defaults, untouched
    assert seen["phases"] == [PhaseSettings(epochs=2)] and seen["extra"]["recipe"] is None
    assert seen["options"].compile == CompileSettings()


def test_cli_recipe_sets_the_flags_left_alone_and_given_flags_win():
    from vggunet.cli.data_args import data_settings
    from vggunet.cli.recipe_args import apply_recipe, describe_recipe
    from vggunet.cli.train import training_settings

    from vggunet.cli.recipe_args import recipe_flags

    parser = _subparser("finetune")
    tracked = {a.dest for a in parser._actions if type(a).__name__.startswith("Tracked")}
    for name in RECIPES:
        assert set(recipe_flags(name, "finetune")) <= tracked, name
    # --phase2-lr given at its default value still wins over the recipe's 3e-4.
    args = parser.parse_args(["--data", "d", "--out", "o", "--recipe", "photos",
                              "--loss", "dice", "--layerwise-lr", "0.25", "--crop", "64x64",
                              "--phase2-lr", "1e-4", "--decoder-batchnorm"])
    applied = apply_recipe(args, "finetune")
    assert not {"loss", "layerwise_lr", "phase2_lr", "decoder_batchnorm"} & set(applied)
    api = recipe_keywords("photos", "finetune")
    # The CLI and the API agree on every value the recipe gives.
    for key in ("unfreeze", "lr_schedule", "warmup_epochs"):
        assert getattr(args, key) == api[key], key
    assert (args.loss, args.layerwise_lr, args.phase1_lr, args.phase2_lr) == (
        "dice", 0.25, 1e-3, 1e-4)
    assert args.decoder_batchnorm is True and args.skip_batchnorm is True
    assert data_settings(args) == DataSettings(crop=(64, 64), **recipe_keywords("photos", "data"))
    assert training_settings(args)["compile_settings"] == CompileSettings(loss="dice",
                                                                          ignore_index=255)
    assert describe_recipe("photos", applied).startswith("recipe photos: --ignore-index 255, ")

    plain = _subparser("train")
    args = plain.parse_args(["--data", "d", "--out", "o", "--recipe", "em", "--lr", "0.01",
                             "--loss", "ce+dice"])
    apply_recipe(args, "train")
    assert (args.lr, args.loss, args.augment, args.recalibrate_bn) == (
        0.01, "ce+dice", "flip,rot90", 8)
    assert training_settings(args)["run_settings"].recalibrate_bn == 8

    # The README's advice for short budgets: the recipe without scaling, by one flag.
    args = parser.parse_args(["--data", "d", "--out", "o", "--recipe", "photos",
                              "--augment", "hflip,jitter"])
    applied = apply_recipe(args, "finetune")
    assert "augment" not in applied and args.augment == "hflip,jitter"
    assert data_settings(args).augment == "hflip,jitter"

    # A switch the recipe turns on can be turned off on the command line.
    args = parser.parse_args(["--data", "d", "--out", "o", "--recipe", "photos",
                              "--no-skip-batchnorm"])
    applied = apply_recipe(args, "finetune")
    assert (args.skip_batchnorm, args.decoder_batchnorm) == (False, True)
    assert "skip_batchnorm" not in applied and applied["decoder_batchnorm"] is True

    # Without --recipe nothing changes: the flags keep the API's defaults.
    untouched = parser.parse_args(["--data", "d", "--out", "o"])
    assert untouched.recipe is None and apply_recipe(untouched, "finetune") == {}
    assert data_settings(untouched) == DataSettings()
