"""`vggunet train` and `vggunet finetune`: training runs into a run folder.

Every training flag takes its default from the settings dataclasses of
`vggunet.training.settings` (the API's defaults), and the parsed flags become those settings
again (`training_settings`), so the CLI and `train`/`finetune` cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from vggunet.choices import LOSS_NAMES
from vggunet.cli.args import (
    FREEZE_SPEC_HELP, non_negative_int, parse_spec, positive_float, positive_int,
)
from vggunet.cli.data_args import add_data_args, data_settings, make_datasets
from vggunet.cli.model_args import add_model_args, build_model_from_args
from vggunet.cli.recipe_args import add_recipe_arg, apply_recipe, describe_recipe
from vggunet.cli.volume_args import (
    add_volume_data_args, add_volume_model_args, build_volume_model, check_volume_flags,
    is_volume_run, make_volume_datasets, volume_settings, volume_training_defaults,
)
from vggunet.console import resolve_say
from vggunet.training.settings import (
    FINETUNE_PHASE1, FINETUNE_PHASE2, LR_SCHEDULES, STRATEGIES, TRAIN_PHASE, CompileSettings,
    RunSettings,
)


def _add_training_args(p: argparse.ArgumentParser) -> None:
    c, r = CompileSettings(), RunSettings()
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="run folder: checkpoints/{last,best}.keras, log.csv, state.json")
    g.add_argument("--loss", default=c.loss,
                   help=f"{', '.join(LOSS_NAMES)} (default {c.loss})")
    g.add_argument("--metrics", default=",".join(c.metrics),
                   help=f"comma-separated metrics (default {','.join(c.metrics)})")
    g.add_argument("--monitor", default=r.monitor,
                   help=f"metric that picks the best checkpoint and drives early stopping "
                        f"(default {r.monitor}; without validation data the training "
                        f"value, and the loss without a miou metric)")
    g.add_argument("--early-stopping", type=non_negative_int, default=r.early_stopping,
                   metavar="N", help="stop after N epochs without improvement (default off; "
                                     "0 = off)")
    g.add_argument("--steps-per-epoch", type=positive_int, default=r.steps_per_epoch,
                   metavar="N", help="batches per epoch (the training data repeats)")
    g.add_argument("--validation-steps", type=positive_int, default=r.validation_steps,
                   metavar="N")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; changed settings "
                        "are applied when safe (epochs, logging, data) and refused otherwise")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction,
                   default=r.tensorboard,
                   help="write TensorBoard logs to OUT/tensorboard (default on)")
    g.add_argument("--recalibrate-bn", type=non_negative_int, default=r.recalibrate_bn,
                   metavar="N",
                   help="re-estimate the decoder's BatchNorm statistics on N training batches "
                        "before each validation and checkpoint (default off; 0 = off)")
    g.add_argument("--lr-schedule", default=TRAIN_PHASE.lr_schedule, choices=LR_SCHEDULES,
                   help="learning rate over the (last) phase: constant, cosine or poly (power "
                        "0.9) from the phase's rate towards 0, set per epoch or per batch with "
                        "--lr-per-step (default "
                        f"{TRAIN_PHASE.lr_schedule})")
    g.add_argument("--warmup-epochs", type=non_negative_int, default=TRAIN_PHASE.warmup_epochs,
                   metavar="N",
                   help="linear warm-up over the first N epochs of the (last) phase, from a "
                        "tenth of its rate, before the --lr-schedule decay (default "
                        f"{TRAIN_PHASE.warmup_epochs}: none)")
    g.add_argument("--lr-per-step", action=argparse.BooleanOptionalAction,
                   default=TRAIN_PHASE.lr_per_step,
                   help="set the (last) phase's scheduled rate before every batch, the decay "
                        "and warm-up running over steps, instead of once per epoch (default "
                        "off)")
    g.add_argument("--layerwise-lr", type=positive_float, default=TRAIN_PHASE.layerwise_lr,
                   metavar="F",
                   help="layer-wise rates over the (last) phase, F in (0, 1]: encoder stage i "
                        "of N trains at the rate x F^(N-i), so the top stage, decoder and head "
                        "at the full rate and lower stages slower (default off)")
    g.add_argument("--quiet", action="store_true",
                   help="no per-epoch progress and no progress lines of vggunet's")
    g.add_argument("--strategy", default=STRATEGIES[0], choices=STRATEGIES,
                   help="distribution: mirrored = all GPUs of this machine, multiworker = the "
                        "machines in TF_CONFIG (run the same command on each); --batch-size is "
                        f"then the global batch, split across replicas (default {STRATEGIES[0]})")


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The shared keywords of `train`/`finetune` that the parsed training flags ask for.

    Args:
        args: parsed flags of `train`/`finetune`.

    Returns:
        `compile_settings`, `run_settings`, `data_settings`, `resume` and `out_dir`.
    """
    volumes = is_volume_run(args)
    if volumes:
        volume_training_defaults(args)
    return dict(
        out_dir=args.out, resume=args.resume,
        data_settings=volume_settings(args) if volumes else data_settings(args),
        compile_settings=CompileSettings(loss=args.loss, metrics=args.metrics,
                                         ignore_index=args.ignore_index),
        run_settings=RunSettings(
            monitor=args.monitor, steps_per_epoch=args.steps_per_epoch,
            validation_steps=args.validation_steps, tensorboard=args.tensorboard,
            # 0 switches these off on the command line, as None does in the API.
            early_stopping=args.early_stopping or None,
            recalibrate_bn=args.recalibrate_bn or None, verbose=0 if args.quiet else 2),
    )


def _start(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Checks the run folder is free, resolves `--strategy`, builds the data: before any
    model is built, so a folder in use or bad data stops the command at once."""
    from vggunet.training.distribute import is_chief, num_replicas, resolve_strategy, strategy_name
    from vggunet.training.lock import RunLock

    # Multi-worker strategies must come before TensorFlow runs anything.
    strategy = resolve_strategy(args.strategy)
    if is_chief(strategy):
        RunLock(args.out).check()
    if strategy is not None:
        replicas = num_replicas(strategy)
        role = "" if is_chief(strategy) else "; not the chief: writes nothing to --out"
        print(f"strategy: {strategy_name(strategy)}, {replicas} replica(s); global batch "
              f"{args.batch_size} ({args.batch_size / replicas:g} per replica){role}")
    if is_volume_run(args):
        check_volume_flags(args)
        train_ds, val_ds, n_train, n_val = make_volume_datasets(args)
        print(f"data: {n_train} training volumes, {n_val} validation volumes")
    else:
        train_ds, val_ds, n_train, n_val = make_datasets(args)
        print(f"data: {n_train} training pairs, {n_val} validation pairs")
    return strategy, train_ds, val_ds


def _report_training(result: Any, out: str) -> None:
    best = result.best_value
    best_text = f"{float(best):.4f}" if isinstance(best, (int, float)) else str(best)
    print(f"epochs completed: {result.epochs_completed}"
          + (f" (stopped: {result.stopped_reason})" if result.stopped_reason else "")
          + f" in {result.wall_time_s:.1f} s")
    print(f"best {result.monitor}: {best_text}")
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    log = os.path.join(out, "log.csv")
    # A non-chief worker of a multi-worker run writes nothing to --out.
    print(f"log: {log}" if os.path.isfile(log) else "log: none written here")


def _build_for_training(args: argparse.Namespace) -> Any:
    from vggunet.saving import load_model

    if getattr(args, "model", None):
        model = load_model(args.model, compile=False)
        if not is_volume_run(args):
            from vggunet.evaluate import check_data_fits_model

            # The masks were checked against --num-classes: the model must predict as many.
            check_data_fits_model(model, None, num_classes=args.num_classes)
        return model
    return build_volume_model(args) if is_volume_run(args) else build_model_from_args(args)


def _use_recipe(args: argparse.Namespace, command: str) -> None:
    # Before anything reads the flags: the data, the model and the settings follow the recipe.
    # (train/finetune get recipe= too, to record it: every keyword they get is explicit.)
    applied = apply_recipe(args, command)
    if args.recipe is not None:
        resolve_say(not args.quiet)(describe_recipe(args.recipe, applied))


def _cmd_train(args: argparse.Namespace) -> int:
    from vggunet.training import train

    _use_recipe(args, "train")
    strategy, train_ds, val_ds = _start(args)
    say = resolve_say(not args.quiet)

    def model_fn() -> Any:
        # Called by train() inside the strategy's scope, so the variables are mirrored.
        model = _build_for_training(args)
        if args.freeze is not None:
            from vggunet.transfer.freezing import freeze

            # train() compiles the model itself: no advice to recompile.
            say(freeze(model, parse_spec(args.freeze)).describe(recompile_hint=False))
        return model

    result = train(model_fn, train_ds, val_ds, epochs=args.epochs, learning_rate=args.lr,
                   lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
                   lr_per_step=args.lr_per_step, layerwise_lr=args.layerwise_lr,
                   recipe=args.recipe, strategy=strategy,
                   **training_settings(args))
    _report_training(result, args.out)
    return 0


def _add_model_and_data(p: argparse.ArgumentParser) -> None:
    add_model_args(p, weights_default="imagenet")
    add_volume_model_args(p)
    add_data_args(p)
    add_volume_data_args(p, training=True)
    _add_training_args(p)
    p.add_argument("--model", default=None, help="start from this saved .keras model instead")


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a U-Net on a segmentation data set",
                       description="Build a U-Net (or load --model), train it on the data and "
                                   "write checkpoints, log.csv and state.json to --out.")
    _add_model_and_data(p)
    p.add_argument("--epochs", type=positive_int, default=TRAIN_PHASE.epochs,
                   help=f"epochs in total (default {TRAIN_PHASE.epochs})")
    p.add_argument("--lr", type=positive_float, default=TRAIN_PHASE.learning_rate,
                   help=f"learning rate (default {TRAIN_PHASE.learning_rate:g})")
    p.add_argument("--freeze", default=None,
                   help=f"freeze spec while training: {FREEZE_SPEC_HELP}")
    add_recipe_arg(p)  # last: it marks the flags it can set
    p.set_defaults(func=_cmd_train)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from vggunet.training import finetune

    _use_recipe(args, "finetune")
    strategy, train_ds, val_ds = _start(args)
    result = finetune(
        lambda: _build_for_training(args), train_ds, val_ds, phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs, phase1_lr=args.phase1_lr, phase2_lr=args.phase2_lr,
        unfreeze=parse_spec(args.unfreeze), train_bn=args.train_bn,
        lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
        lr_per_step=args.lr_per_step, layerwise_lr=args.layerwise_lr, recipe=args.recipe,
        strategy=strategy,
        **training_settings(args),
    )
    _report_training(result, args.out)
    return 0


def _add_finetune(sub: Any) -> None:
    p = sub.add_parser("finetune", help="two-phase transfer learning (frozen, then unfrozen)",
                       description="Phase 1 trains the decoder with the encoder frozen; phase 2 "
                                   "unfreezes the top encoder blocks at a lower learning rate.")
    _add_model_and_data(p)
    for n, phase, what in ((1, FINETUNE_PHASE1, "with the encoder frozen"),
                           (2, FINETUNE_PHASE2, "with the top of the encoder unfrozen")):
        p.add_argument(f"--phase{n}-epochs", type=non_negative_int, default=phase.epochs,
                       help=f"epochs {what} (default {phase.epochs})")
        p.add_argument(f"--phase{n}-lr", type=positive_float, default=phase.learning_rate,
                       help=f"phase {n} learning rate (default {phase.learning_rate:g})")
    two = FINETUNE_PHASE2
    p.add_argument("--unfreeze", default=two.unfreeze,
                   help="what phase 2 unfreezes: topN (top N encoder blocks), encoder/all, "
                        f"or prefixes like block4,block5 (default {two.unfreeze})")
    p.add_argument("--train-bn", action="store_true", default=two.train_bn,
                   help="let encoder BatchNorm layers train in phase 2")
    add_recipe_arg(p)  # last: it marks the flags it can set
    p.set_defaults(func=_cmd_finetune)
