"""The entry points: `train` (one phase) and `finetune` (two-phase transfer learning).

Both take the model, the data and the run folder, their own phase arguments, and the shared
options below as keywords (every field of `CompileSettings` and `RunSettings`, plus `resume`,
`callbacks`, `strategy`, `say` and the settings objects themselves). The defaults are those of
the settings dataclasses (`vggunet.training.settings`); `inspect.signature(train)` lists every
keyword with its default.

Fine-tuning follows Keras's transfer-learning recipe: phase 1 trains the decoder on a frozen
encoder, phase 2 unfreezes the top encoder blocks (BatchNorm stays frozen by default) and
trains everything with a smaller learning rate. Epoch numbers are global across phases.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import re
from typing import Any, Callable

import keras

from vggunet.checks import did_you_mean
from vggunet.console import Say
from vggunet.errors import UnexpectedArgumentError
from vggunet.training.distribute import ModelOrFactory
from vggunet.training.loop import Phase, TrainResult, run_session
from vggunet.training.recipes import recipe_keywords
from vggunet.training.settings import (
    FINETUNE_PHASE1, FINETUNE_PHASE2, TRAIN_PHASE, CompileSettings, DataSettings, PhaseSettings,
    RunSettings,
)
from vggunet.transfer.freezing import FreezeReport, freeze, select_layers, top_blocks
from vggunet.transfer.freezing import unfreeze as _unfreeze

__all__ = ["finetune", "prepare_phase2", "train"]

# The options train and finetune share besides the settings fields: keyword -> default.
_COMMON: dict[str, Any] = {"resume": False, "callbacks": None, "strategy": None, "say": None,
                           "compile_settings": None, "run_settings": None,
                           "data_settings": None}
_FIELDS = {cls: [f.name for f in dataclasses.fields(cls)] for cls in (CompileSettings,
                                                                      RunSettings)}


@dataclasses.dataclass(frozen=True)
class _Options:
    compile: CompileSettings
    run: RunSettings
    data: DataSettings | None
    resume: bool
    callbacks: Any
    strategy: Any
    say: Say | None


def _options(function: str, options: dict[str, Any]) -> _Options:
    """Sorts the shared keywords; field keywords override the settings objects' fields."""
    known = {*_COMMON, *_FIELDS[CompileSettings], *_FIELDS[RunSettings]}
    for name in options:
        if name not in known:
            raise UnexpectedArgumentError(
                f"{function}() got an unexpected keyword argument {name!r}."
                f"{did_you_mean(name, sorted(known))}")
    common = {**_COMMON, **{k: v for k, v in options.items() if k in _COMMON}}
    settings = {}
    for cls, given in ((CompileSettings, common["compile_settings"]),
                       (RunSettings, common["run_settings"])):
        fields = {k: options[k] for k in _FIELDS[cls] if k in options}
        settings[cls] = dataclasses.replace(given or cls(), **fields)
    return _Options(compile=settings[CompileSettings], run=settings[RunSettings],
                    data=common["data_settings"], resume=bool(common["resume"]),
                    callbacks=common["callbacks"], strategy=common["strategy"],
                    say=common["say"])


def _with_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Lists the shared keywords, with their defaults, in the function's signature."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type,
                                default=getattr(cls(), f.name))
              for cls in (CompileSettings, RunSettings) for f in dataclasses.fields(cls)]
    shared += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
               for name, value in _COMMON.items()]
    setattr(function, "__signature__", signature.replace(parameters=own + shared))
    return function


def _with_recipe(function: Callable[..., Any]) -> Callable[..., Any]:
    """Fills in the keywords of `recipe=` that the caller did not give (explicit ones win)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("recipe")
        if name is not None:
            # A settings object given explicitly keeps its fields: they were chosen too.
            chosen = {f for key, cls in (("compile_settings", CompileSettings),
                                         ("run_settings", RunSettings))
                      if kwargs.get(key) is not None for f in _FIELDS[cls]}
            for key, value in recipe_keywords(name, function.__name__).items():
                if key not in chosen:
                    kwargs.setdefault(key, value)
        return function(*args, **kwargs)

    return wrapper


def _run(kind: str, model: ModelOrFactory, train_data: Any, val_data: Any,
         phases: list[Phase], out_dir: Any, options: _Options,
         extra_state: dict[str, Any]) -> TrainResult:
    return run_session(model, train_data, val_data, phases, kind=kind, out_dir=out_dir,
                       compile=options.compile, run=options.run, data=options.data,
                       extra_state=extra_state, resume=options.resume,
                       callbacks=options.callbacks, strategy=options.strategy, say=options.say)


@_with_recipe
@_with_options
def train(model: ModelOrFactory, train_data: Any, val_data: Any = None, *,
          out_dir: str | os.PathLike, epochs: int,
          learning_rate: float = TRAIN_PHASE.learning_rate,
          lr_schedule: str = TRAIN_PHASE.lr_schedule,
          warmup_epochs: int = TRAIN_PHASE.warmup_epochs,
          lr_per_step: bool = TRAIN_PHASE.lr_per_step,
          layerwise_lr: float | None = TRAIN_PHASE.layerwise_lr, recipe: str | None = None,
          **options: Any) -> TrainResult:
    """Trains `model` as it is (its trainable flags untouched) for `epochs` epochs in total.

    Args:
        model: the model, compiled here with `compile_model`; or a function of no arguments
            that builds it (called inside the strategy's scope when `strategy` is given; a
            model passed as it is is then rebuilt there from its config and weights, and gets
            the trained weights back at the end).
        train_data: `(images, masks[, weights])` batches, e.g. a `tf.data.Dataset` (shuffled
            by its pipeline; arrays and `PyDataset`s are shuffled by Keras).
        val_data: validation batches or None.
        out_dir: run folder (checkpoints, state.json, log.csv, tensorboard, run.lock).
        epochs: total epochs (global; a resumed run continues up to it).
        learning_rate: the learning rate.
        lr_schedule: "constant" (default), "cosine" (`learning_rate` decays along half a
            cosine towards 0 over the epochs, set per epoch: `CosineDecayEpochs`) or "poly"
            (polynomial decay, power 0.9: `PolyDecayEpochs`).
        warmup_epochs: epochs of linear warm-up from a tenth of `learning_rate` (0: none).
        lr_per_step: set the scheduled rate before every batch, the schedule and warm-up
            running over steps (default: once per epoch).
        layerwise_lr: F in (0, 1]: encoder stage i of N trains at `learning_rate *
            F ** (N - i)`, the rest at `learning_rate` (`vggunet.training.layerwise`); None:
            one rate.
        recipe: a named recipe ("em", "photos"; `vggunet.training.recipes`): its values
            replace the defaults of every keyword not given here (learning_rate,
            lr_schedule, warmup_epochs, lr_per_step, layerwise_lr and compile/run fields);
            keywords given explicitly, and the fields of a `compile_settings`/`run_settings`
            object given, win. Its data and model settings are not applied here (the data and
            the model are already built): pass `recipe_keywords(recipe, "data")` to
            `make_dataset` and `recipe_keywords(recipe, "model")` to `build_vgg_unet`. None:
            no recipe.
        **options: any field of `CompileSettings` (loss, metrics, optimizer, ignore_index,
            class_weights, num_classes, jit_compile) and of `RunSettings` (monitor, mode,
            early_stopping, steps_per_epoch, validation_steps, tensorboard, recalibrate_bn,
            verbose), with their defaults; `compile_settings`, `run_settings`: settings
            objects (the field keywords override their fields); `data_settings`: the
            `DataSettings` the data was built with, recorded in state.json;
            `resume` (False): continue from `out_dir/checkpoints/last.keras` + `state.json` if
            present, applying the safe setting changes and refusing the others (see
            `vggunet.training.settings`); `callbacks`: extra Keras callbacks; `strategy`:
            None / "none", "mirrored", "multiworker" or a `tf.distribute.Strategy` (see
            `vggunet.distribute`: batches are global batches, only the chief writes to
            `out_dir`, `recalibrate_bn` is not supported); `say`: a function that gets
            vggunet's lines instead of stdout, whatever `verbose` is (without it, `verbose=0`
            silences the progress lines, not those saying why a run stopped or did not
            resume).

    Returns:
        A `TrainResult`.

    Raises:
        RunLockedError: another live training process holds `out_dir`.
        SettingsMismatchError: `resume` with settings that cannot be applied (each named).
    """
    settings = _options("train", options)
    phase = PhaseSettings.from_arguments({}, epochs=epochs, learning_rate=learning_rate,
                                         lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                                         lr_per_step=lr_per_step, layerwise_lr=layerwise_lr)
    return _run("train", model, train_data, val_data,
                [Phase(1, "train", phase, lambda m: None, "as given")], out_dir, settings,
                {"epochs": epochs, "learning_rate": learning_rate, "lr_schedule": lr_schedule,
                 "warmup_epochs": warmup_epochs, "lr_per_step": lr_per_step,
                 "layerwise_lr": layerwise_lr, "recipe": recipe})


def _phase2_spec(model: keras.Model, spec: Any) -> Any:
    if isinstance(spec, str):
        match = re.fullmatch(r"top(\d+)", spec.strip().lower())
        if match:
            return top_blocks(model, int(match.group(1)))
    return spec


def prepare_phase2(model: keras.Model, unfreeze: Any = FINETUNE_PHASE2.unfreeze, *,
                   train_bn: bool = FINETUNE_PHASE2.train_bn) -> FreezeReport:
    """Sets the phase-2 trainable flags of `finetune`: encoder frozen, then `unfreeze` unfrozen.

    Args:
        model: a vggunet encoder U-Net (changed in place; recompile before training).
        unfreeze: "topN" (the encoder's top N blocks), "encoder", or any `vggunet.freeze` spec.
        train_bn: let encoder BatchNorm layers train.

    Returns:
        The `FreezeReport` of the unfreeze step.
    """
    freeze(model, "encoder")
    return _unfreeze(model, _phase2_spec(model, unfreeze), train_bn=train_bn)


def _spec_text(spec: Any) -> str:
    if callable(spec) and not isinstance(spec, str):
        return getattr(spec, "__name__", "predicate")
    return str(spec)


@_with_recipe
@_with_options
def finetune(model: ModelOrFactory, train_data: Any, val_data: Any = None, *,
             out_dir: str | os.PathLike, phase1_epochs: int = FINETUNE_PHASE1.epochs,
             phase2_epochs: int = FINETUNE_PHASE2.epochs,
             phase1_lr: float = FINETUNE_PHASE1.learning_rate,
             phase2_lr: float = FINETUNE_PHASE2.learning_rate,
             unfreeze: Any = FINETUNE_PHASE2.unfreeze, train_bn: bool = FINETUNE_PHASE2.train_bn,
             lr_schedule: str = FINETUNE_PHASE2.lr_schedule,
             warmup_epochs: int = FINETUNE_PHASE2.warmup_epochs,
             lr_per_step: bool = FINETUNE_PHASE2.lr_per_step,
             layerwise_lr: float | None = FINETUNE_PHASE2.layerwise_lr,
             recipe: str | None = None, **options: Any) -> TrainResult:
    """Two-phase transfer learning: frozen encoder, then the top of the encoder unfrozen.

    Phase 1 freezes the whole encoder (`freeze(model, "encoder")`) and trains the rest for
    `phase1_epochs` at `phase1_lr`. Phase 2 unfreezes `unfreeze` (encoder BatchNorm stays frozen
    unless `train_bn`), recompiles at `phase2_lr` and trains `phase2_epochs` more; epochs are
    numbered globally. A phase with 0 epochs is skipped. Early stopping ends the current phase.
    Defaults: `FINETUNE_PHASE1` (5 epochs at 1e-3) and `FINETUNE_PHASE2` (10 epochs at 1e-4,
    top two blocks).

    Args:
        model: a vggunet encoder U-Net, or a function building one (see `train`).
        train_data: training batches (see `train`).
        val_data: validation batches or None.
        out_dir: run folder.
        phase1_epochs: epochs of phase 1.
        phase2_epochs: epochs of phase 2.
        phase1_lr: learning rate of phase 1.
        phase2_lr: learning rate of phase 2.
        unfreeze: phase-2 spec: "topN" (the encoder's top N blocks), "encoder", or any
            `vggunet.freeze` spec (int, prefixes, predicate).
        train_bn: let encoder BatchNorm layers train in phase 2.
        lr_schedule: phase 2's learning rate: "constant" (default), "cosine" or "poly" (from
            `phase2_lr` towards 0 over phase 2's epochs); phase 1 keeps `phase1_lr`.
        warmup_epochs: phase 2's epochs of linear warm-up from a tenth of `phase2_lr`.
        lr_per_step: set phase 2's scheduled rate before every batch (see `train`).
        layerwise_lr: phase 2's layer-wise rates, F in (0, 1]: encoder stage i of N trains at
            `phase2_lr * F ** (N - i)` (see `train`); with `unfreeze="encoder"` the whole
            encoder trains, its low stages slowest. None: one rate.
        recipe: a named recipe ("em", "photos"): its values replace the defaults of every
            keyword not given here (phase 1 and 2 rates, unfreeze, schedule, warm-up,
            per-step rates, layer-wise rates, compile/run fields); explicit keywords win (see
            `train`).
        **options: as in `train` (compile and run settings, `resume`, `callbacks`,
            `strategy`, `say`, the settings objects).

    Returns:
        A `TrainResult` over both phases.

    Raises:
        RunLockedError: another live training process holds `out_dir`.
        SettingsMismatchError: `resume` with settings that cannot be applied (each named).
    """
    settings = _options("finetune", options)
    first = PhaseSettings.from_arguments({"epochs": "phase1_epochs",
                                          "learning_rate": "phase1_lr"},
                                         epochs=phase1_epochs, learning_rate=phase1_lr)
    second = PhaseSettings.from_arguments(
        {"epochs": "phase2_epochs", "learning_rate": "phase2_lr"}, epochs=phase2_epochs,
        learning_rate=phase2_lr, lr_schedule=lr_schedule, unfreeze=unfreeze, train_bn=train_bn,
        warmup_epochs=warmup_epochs, lr_per_step=lr_per_step, layerwise_lr=layerwise_lr)
    spec_text = _spec_text(unfreeze)
    phases = [
        Phase(1, "frozen encoder", first, lambda m: freeze(m, "encoder"), "freeze encoder"),
        Phase(2, "fine-tune", second,
              lambda m: prepare_phase2(m, unfreeze, train_bn=train_bn),
              f"unfreeze {spec_text}, train_bn={train_bn}",
              check=lambda m: select_layers(m, _phase2_spec(m, unfreeze))),
    ]
    return _run("finetune", model, train_data, val_data, phases, out_dir, settings,
                {"phase1_epochs": phase1_epochs, "phase2_epochs": phase2_epochs,
                 "phase1_lr": phase1_lr, "phase2_lr": phase2_lr, "unfreeze": spec_text,
                 "train_bn": train_bn, "lr_schedule": lr_schedule,
                 "warmup_epochs": warmup_epochs, "lr_per_step": lr_per_step,
                 "layerwise_lr": layerwise_lr, "recipe": recipe})
