"""`vggunet train` and `vggunet finetune`: training runs into a run folder."""

from __future__ import annotations

import argparse
import os
from typing import Any

from vggunet.cli.args import non_negative_int, parse_spec, positive_float, positive_int
from vggunet.cli.data_args import add_data_args, make_datasets
from vggunet.cli.model_args import add_model_args, build_model_from_args


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="run folder: checkpoints/{last,best}.keras, log.csv, state.json")
    g.add_argument("--loss", default="ce+dice",
                   help="ce, dice, jaccard, focal or ce+dice (default ce+dice)")
    g.add_argument("--metrics", default="miou,dice,accuracy",
                   help="comma-separated metrics (default miou,dice,accuracy)")
    g.add_argument("--monitor", default=None,
                   help="metric that picks the best checkpoint (default: the trainer's, "
                        "val_loss with validation data)")
    g.add_argument("--early-stopping", type=non_negative_int, default=0, metavar="N",
                   help="stop after N epochs without improvement (0 = off)")
    g.add_argument("--steps-per-epoch", type=positive_int, default=None, metavar="N",
                   help="batches per epoch (the training data repeats)")
    g.add_argument("--validation-steps", type=positive_int, default=None, metavar="N")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard logs to OUT/tensorboard")
    g.add_argument("--recalibrate-bn", type=non_negative_int, default=0, metavar="N",
                   help="re-estimate the decoder's BatchNorm statistics on N training batches "
                        "before each validation and checkpoint (0 = off)")
    g.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                   help="learning rate over the (last) phase: constant, or cosine from the "
                        "phase's rate towards 0, set per epoch (default constant)")
    g.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    g.add_argument("--strategy", default="none", choices=("none", "mirrored", "multiworker"),
                   help="distribution: mirrored = all GPUs of this machine, multiworker = the "
                        "machines in TF_CONFIG (run the same command on each); --batch-size is "
                        "then the global batch, split across replicas (default none)")


def _resolve_cli_strategy(args: argparse.Namespace) -> Any:
    """Resolves `--strategy` before TensorFlow runs anything (multi-worker must come first).

    Args:
        args: parsed flags of `train`/`finetune`.

    Returns:
        The `tf.distribute.Strategy`, or None for `--strategy none`.
    """
    from vggunet.training.distribute import is_chief, num_replicas, resolve_strategy, strategy_name

    strategy = resolve_strategy(getattr(args, "strategy", "none"))
    if strategy is not None:
        replicas = num_replicas(strategy)
        role = "" if is_chief(strategy) else "; not the chief: writes nothing to --out"
        print(f"strategy: {strategy_name(strategy)}, {replicas} replica(s); global batch "
              f"{args.batch_size} ({args.batch_size / replicas:g} per replica){role}")
    return strategy


def _training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    kwargs: dict[str, Any] = dict(
        out_dir=args.out, loss=args.loss, metrics=metrics, ignore_index=args.ignore_index,
        early_stopping=args.early_stopping or None, steps_per_epoch=args.steps_per_epoch,
        validation_steps=args.validation_steps, resume=args.resume,
        tensorboard=args.tensorboard, verbose=0 if args.quiet else 2,
        recalibrate_bn=args.recalibrate_bn or None, lr_schedule=args.lr_schedule,
    )
    if args.monitor:
        kwargs["monitor"] = args.monitor
    return kwargs


def _report_training(result: Any, out: str) -> None:
    def get(name: str, default: Any = None) -> Any:
        return getattr(result, name, default)

    best = get("best_value")
    best_text = f"{float(best):.4f}" if isinstance(best, (int, float)) else str(best)
    print(f"epochs completed: {get('epochs_completed')}"
          + (f" (stopped: {get('stopped_reason')})" if get("stopped_reason") else "")
          + (f" in {get('wall_time_s'):.1f} s" if get("wall_time_s") is not None else ""))
    print(f"best {get('monitor')}: {best_text}")
    print(f"best checkpoint: {get('best_checkpoint')}")
    print(f"last checkpoint: {get('last_checkpoint')}")
    log = os.path.join(out, "log.csv")
    # A non-chief worker of a multi-worker run writes nothing to --out.
    print(f"log: {log}" if os.path.isfile(log) else "log: none written here")


def _build_for_training(args: argparse.Namespace) -> Any:
    from vggunet.saving import load_model

    if getattr(args, "model", None):
        return load_model(args.model, compile=False)
    return build_model_from_args(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from vggunet.training import train

    strategy = _resolve_cli_strategy(args)
    train_ds, val_ds, n_train, n_val = make_datasets(args)
    print(f"data: {n_train} training pairs, {n_val} validation pairs")

    def model_fn() -> Any:
        # Called by train() inside the strategy's scope, so the variables are mirrored.
        model = _build_for_training(args)
        if args.freeze is not None:
            from vggunet.transfer.freezing import freeze

            print(freeze(model, parse_spec(args.freeze)))
        return model

    result = train(model_fn, train_ds, val_ds, epochs=args.epochs, learning_rate=args.lr,
                   strategy=strategy, **_training_kwargs(args))
    _report_training(result, args.out)
    return 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a U-Net on a segmentation data set",
                       description="Build a U-Net (or load --model), train it on the data and "
                                   "write checkpoints, log.csv and state.json to --out.")
    add_model_args(p, weights_default="imagenet")
    add_data_args(p)
    _add_training_args(p)
    p.add_argument("--model", default=None, help="start from this saved .keras model instead")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate")
    p.add_argument("--freeze", default=None,
                   help="freeze spec while training: N, encoder, or prefixes like block1,block2")
    p.set_defaults(func=_cmd_train)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from vggunet.training import finetune

    strategy = _resolve_cli_strategy(args)
    train_ds, val_ds, n_train, n_val = make_datasets(args)
    print(f"data: {n_train} training pairs, {n_val} validation pairs")
    result = finetune(
        lambda: _build_for_training(args), train_ds, val_ds, phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs, phase1_lr=args.phase1_lr, phase2_lr=args.phase2_lr,
        unfreeze=parse_spec(args.unfreeze), train_bn=args.train_bn, strategy=strategy,
        **_training_kwargs(args),
    )
    _report_training(result, args.out)
    return 0


def _add_finetune(sub: Any) -> None:
    p = sub.add_parser("finetune", help="two-phase transfer learning (frozen, then unfrozen)",
                       description="Phase 1 trains the decoder with the encoder frozen; phase 2 "
                                   "unfreezes the top encoder blocks at a lower learning rate.")
    add_model_args(p, weights_default="imagenet")
    add_data_args(p)
    _add_training_args(p)
    p.add_argument("--model", default=None, help="start from this saved .keras model instead")
    p.add_argument("--phase1-epochs", type=non_negative_int, default=5)
    p.add_argument("--phase2-epochs", type=non_negative_int, default=10)
    p.add_argument("--phase1-lr", type=positive_float, default=1e-3)
    p.add_argument("--phase2-lr", type=positive_float, default=1e-4)
    p.add_argument("--unfreeze", default="top2",
                   help="what phase 2 unfreezes: topN (top N encoder blocks), encoder/all, "
                        "or prefixes like block4,block5 (default top2)")
    p.add_argument("--train-bn", action="store_true",
                   help="let encoder BatchNorm layers train in phase 2")
    p.set_defaults(func=_cmd_finetune)
