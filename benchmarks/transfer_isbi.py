"""ISBI 2012 transfer learning: does a pretrained (HED) VGG16 encoder help a U-Net? (issue 5)

Fixed split: images 0-23 train, 24-29 held out (full 512x512). Label 255 = cell (class 1),
0 = membrane (class 0). Every configuration trains for the same budget (steps x batch x crop)
with vggunet's public API (`data.make_dataset`, `training.train` / `training.finetune`,
`evaluate.evaluate`, `predict.predict_proba(tta=True)`) and is scored on the held-out images
with and without test-time augmentation.

Configurations (`--configs`, comma-separated):
    hed_frozen          VGG16 U-Net, HED encoder frozen, decoder trained
    random_frozen       the same with a random-init frozen encoder
    hed_finetune        HED encoder: frozen phase, then the top encoder blocks unfrozen
    random_full         VGG16 U-Net, random init, everything trainable
    unet_scratch        `build_unet` (the 2D lab model), 1 input channel, 2 classes
    hed_finetune_noelastic, hed_finetune_fp32, hed_finetune_long   variants of hed_finetune
    hed_frozen_nobn, random_frozen_nobn    1/2 with the un-normalised decoder (the pre-check)

This module holds the configurations and the command line; one run (train, score) is
`transfer_run.py`, the held-out scoring `isbi_scoring.py`, BENCHMARKS.md's tables
`transfer_report.py`.

Each configuration runs in its own subprocess; the results file is rewritten after each one,
so an interrupted run keeps what it finished. Re-running merges into the same file (keyed by
configuration and seed).

Usage (from the repository root):
    .venv/bin/python benchmarks/transfer_isbi.py --configs hed_frozen,random_frozen --seeds 0,1
    .venv/bin/python benchmarks/transfer_isbi.py --table      # render BENCHMARKS.md's section
    .venv/bin/python benchmarks/transfer_isbi.py --rescore --configs hed_finetune_long \
        --tag cos --mirror-pad 64   # where a finished run's errors sit; mirror-padded scores
    .venv/bin/python benchmarks/transfer_isbi.py --quick      # smoke test (minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "isbi2012"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "transfer_isbi.json"

# The split and machine helpers are shared with the plain fine-tuning benchmark.
from isbi_finetune import HELD_OUT_IDS, TRAIN_IDS, _cpu_model, _split  # noqa: E402,F401
from isbi_scoring import (  # noqa: E402
    error_breakdown, held_out_arrays, load_average, mirror_scores, score_prediction,
)
from transfer_report import render_table, update_benchmarks_md  # noqa: E402
from transfer_run import run_dir, run_one  # noqa: E402

BASE_AUGMENT = "flip,rot90,elastic"
NO_ELASTIC_AUGMENT = "flip,rot90"

# One entry per configuration. model: "vgg" (build_vgg_unet) or "lab" (build_unet);
# weights: "hed" or None; mode: "frozen" (encoder frozen throughout, `train`), "finetune"
# (`finetune`: frozen, then `unfreeze` unfrozen), "full" (everything trainable, `train`).
CONFIGS: dict[str, dict[str, Any]] = {
    "hed_frozen": dict(label="1. HED encoder frozen, decoder trained", model="vgg",
                       weights="hed", mode="frozen"),
    "random_frozen": dict(label="2. random-init encoder frozen, decoder trained", model="vgg",
                          weights=None, mode="frozen"),
    "hed_finetune": dict(label="3. HED, two-phase fine-tuning", model="vgg", weights="hed",
                         mode="finetune"),
    "random_full": dict(label="4. random init, all trainable", model="vgg", weights=None,
                        mode="full"),
    "unet_scratch": dict(label="5. `build_unet` (lab model) from scratch", model="lab",
                         weights=None, mode="full"),
    "hed_finetune_noelastic": dict(label="3. without elastic", model="vgg", weights="hed",
                                   mode="finetune", augment=NO_ELASTIC_AUGMENT),
    "hed_finetune_fp32": dict(label="3. float32 (not mixed bfloat16)", model="vgg",
                              weights="hed", mode="finetune", precision="float32"),
    # Without elastic: at the common budget elastic cost 0.019 pixel error (0.1444 vs 0.1255).
    "hed_finetune_long": dict(label="3. long budget", model="vgg", weights="hed",
                              mode="finetune", long=True, augment=NO_ELASTIC_AUGMENT),
    "hed_frozen_nobn": dict(label="1. without decoder BatchNorm", model="vgg", weights="hed",
                            mode="frozen", decoder_batchnorm=False),
    "random_frozen_nobn": dict(label="2. without decoder BatchNorm", model="vgg", weights=None,
                               mode="frozen", decoder_batchnorm=False),
    "hed_frozen_skipbn": dict(label="1. with skip BatchNorm", model="vgg", weights="hed",
                              mode="frozen", skip_batchnorm=True),
    "random_frozen_skipbn": dict(label="2. with skip BatchNorm", model="vgg", weights=None,
                                 mode="frozen", skip_batchnorm=True),
}
DEFAULT_CONFIGS = ("hed_frozen", "random_frozen", "hed_finetune", "random_full", "unet_scratch",
                   "hed_finetune_noelastic", "hed_finetune_fp32", "hed_finetune_long")


def resolve_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A configuration with the run-wide settings (budget, learning rates, ...) filled in.

    Args:
        name: a key of `CONFIGS`.
        args: the parsed command line.

    Returns:
        The configuration dict, with `steps`, `batch`, `crop`, learning rates and so on.
    """
    cfg = {"name": name, "augment": BASE_AUGMENT, "precision": "auto",
           "decoder_batchnorm": bool(args.decoder_batchnorm),
           "skip_batchnorm": bool(args.skip_batchnorm), "long": False, **CONFIGS[name]}
    cfg["steps"] = args.long_steps if cfg["long"] else args.steps
    cfg["crop"] = (args.long_crop or args.crop) if cfg["long"] else args.crop
    cfg.update(batch=args.batch, epochs=args.long_epochs if cfg["long"] else args.epochs,
               phase1_fraction=args.phase1_fraction, unfreeze=args.unfreeze,
               bn_momentum=args.bn_momentum, recalibrate_bn=args.recalibrate_bn or None,
               decoder_filters=args.decoder_filters, lr_decay_last=args.lr_decay_last,
               curve=args.curve, loss=args.loss, tag=args.tag, lr_schedule=args.lr_schedule,
               mirror_pad=args.mirror_pad)
    if cfg["mode"] == "frozen":
        cfg["lr"] = args.lr_frozen
    elif cfg["mode"] == "finetune":
        cfg["lr"] = args.lr_frozen
        cfg["lr2"] = args.lr_finetune
    else:
        cfg["lr"] = args.lr_lab if cfg["model"] == "lab" else args.lr_full
    if cfg["model"] == "lab":
        cfg["decoder_batchnorm"] = cfg["skip_batchnorm"] = False  # the lab model has no BN
        cfg["recalibrate_bn"] = cfg["decoder_filters"] = None
        cfg["precision"] = "float32"  # build_unet takes the global policy: float32 here
    return cfg


def _read(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": {}}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark configurations (each in a subprocess) or renders the table.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The exit status: 0, or 1 when a configuration failed.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return _main(parser, args, argv)


def build_parser() -> argparse.ArgumentParser:
    """The command line of the benchmark (shared by `main` and the tests).

    Returns:
        The argument parser.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    parser.add_argument("--steps", type=int, default=300, help="common budget (training steps)")
    parser.add_argument("--long-steps", type=int, default=900, help="budget of *_long configs")
    parser.add_argument("--crop", type=int, default=256, help="square training crop size")
    parser.add_argument("--long-crop", type=int, default=None,
                        help="crop size of *_long configs (default: --crop)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6,
                        help="checkpoint epochs the steps are split into")
    parser.add_argument("--phase1-fraction", type=float, default=0.25,
                        help="share of a finetune budget spent with the encoder frozen")
    parser.add_argument("--unfreeze", default="top2", help="phase-2 unfreeze spec of finetune")
    parser.add_argument("--lr-frozen", type=float, default=1e-3,
                        help="Adam lr while the encoder is frozen (decoder only)")
    parser.add_argument("--lr-finetune", type=float, default=1e-4,
                        help="Adam lr of finetune's phase 2")
    parser.add_argument("--lr-full", type=float, default=1e-4,
                        help="Adam lr of the all-trainable VGG U-Net")
    parser.add_argument("--lr-lab", type=float, default=1e-3, help="Adam lr of build_unet")
    parser.add_argument("--decoder-batchnorm", type=int, choices=(0, 1), default=1,
                        help="decoder BatchNorm for VGG configs that do not fix it")
    parser.add_argument("--skip-batchnorm", type=int, choices=(0, 1), default=0,
                        help="BatchNorm on skips and bottleneck input, for VGG configs that do "
                             "not fix it")
    parser.add_argument("--bn-momentum", type=float, default=0.9,
                        help="momentum of the decoder-side BatchNorms (vggunet's default 0.9; "
                             "the rows before it was introduced used Keras's 0.99)")
    parser.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                        help="re-estimate BatchNorm statistics on N training batches before "
                             "each checkpoint (train/finetune recalibrate_bn; 0 = off)")
    parser.add_argument("--decoder-filters", type=lambda t: tuple(int(v) for v in t.split(",")),
                        default=None, metavar="N,N,...",
                        help="decoder widths of the VGG configs (default: build_vgg_unet's)")
    parser.add_argument("--long-epochs", type=int, default=None,
                        help="checkpoint epochs of *_long configs (default --epochs)")
    parser.add_argument("--lr-decay-last", type=float, default=0.0,
                        help="share of the epochs run at a tenth of the (last phase's) lr")
    parser.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                        help="learning rate over the last phase (train/finetune lr_schedule): "
                             "constant (with --lr-decay-last a step decay), or cosine from its "
                             "rate towards 0, set per epoch")
    parser.add_argument("--curve", action="store_true",
                        help="score the held-out images after every epoch (learning curve; its "
                             "time is left out of the training wall time)")
    parser.add_argument("--loss", default="ce+dice", choices=("ce+dice", "ce", "dice", "focal"),
                        help="training loss (vggunet.losses name)")
    parser.add_argument("--tag", default="",
                        help="a name for this variant (kept apart from runs of the same config)")
    parser.add_argument("--no-tta", action="store_true", help="skip the TTA evaluation")
    parser.add_argument("--mirror-pad", type=int, default=0, metavar="N",
                        help="also score with N mirrored pixels of border context "
                             "(predict_proba(mirror_pad=N)), plain and with TTA")
    parser.add_argument("--rescore", action="store_true",
                        help="score the finished runs named by --configs/--seeds/--tag again "
                             "from their last.keras (where the errors sit; with --mirror-pad "
                             "also mirror-padded) and merge the figures into their rows; no "
                             "training")
    parser.add_argument("--tta-configs", default="all",
                        help="configs also scored with TTA (8 forward passes per image, the "
                             "costliest part of scoring on a busy CPU): 'all' or a list")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON (merged into)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 12 steps of batch 2 on 128² crops, no TTA")
    parser.add_argument("--table", action="store_true",
                        help="render the results into BENCHMARKS.md and print the table")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-out", default=None, help=argparse.SUPPRESS)
    return parser


def result_key(name: str, seed: int, args: argparse.Namespace) -> str:
    """The results-file key of one run: configuration, seed, BatchNorm momentum and tag."""
    # Rows from before `--bn-momentum` (Keras's 0.99) keep their keys; later ones are told
    # apart by their momentum.
    key = f"{name}@seed{seed}@bnm{args.bn_momentum:g}"
    return key + (f"@{args.tag}" if args.tag else "")


def rescore(args: argparse.Namespace, names: list[str], seeds: list[int], out: Path) -> int:
    """Scores finished runs again from their `last.keras` and merges the figures into their rows.

    Always adds `errors` (`error_breakdown` of the plain prediction); with `--mirror-pad N`
    also the mirror-padded scores (plain, and with TTA where the row has TTA scores).

    Args:
        args: the parsed command line (locates the runs; `--mirror-pad` adds mirror scores).
        names: configurations.
        seeds: seeds.
        out: the results file.

    Returns:
        0, or 1 when a run's checkpoint or row is missing.
    """
    from vggunet.saving import load_model

    failed = 0
    for seed in seeds:
        for name in names:
            cfg = resolve_config(name, args)
            key = result_key(name, seed, args)
            checkpoint = run_dir(cfg, seed) / "checkpoints" / "last.keras"
            row = _read(out).get("runs", {}).get(key)
            if row is None or not checkpoint.is_file():
                print(f"=== {key}: no results row or no {checkpoint}; skipped", flush=True)
                failed += 1
                continue
            _, held_out = _split(Path(args.data))
            scale = "unit" if cfg["model"] == "lab" else "raw"
            model = load_model(checkpoint, compile=False)
            from_logits = cfg["model"] == "lab"
            images, masks = held_out_arrays(held_out, scale)
            _, pred = score_prediction(model, images, masks, from_logits=from_logits)
            figures: dict[str, Any] = {"errors": error_breakdown(masks, pred)}
            if args.mirror_pad > 0:
                figures.update(mirror_scores(model, images, masks, args.mirror_pad,
                                             tta=bool(row.get("tta")), from_logits=from_logits))
            results = _read(out)
            results["runs"][key].update(figures)
            _write(out, results)
            e = figures["errors"]
            print(f"=== {key}: {e['edge_error_share']:.0%} of the errors on class edges "
                  f"({e['edge_share']:.1%} of the pixels, error {e['edge_error']:.3f} there, "
                  f"{e['off_edge_error']:.4f} elsewhere)", flush=True)
            if "mirror" in figures:
                print(f"=== {key}: mirror_pad {args.mirror_pad}: pixel error "
                      f"{figures['mirror']['pixel_error']:.4f}"
                      + (f", with TTA {figures['tta_mirror']['pixel_error']:.4f}"
                         if "tta_mirror" in figures else ""), flush=True)
    return 1 if failed else 0


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace,
          argv: list[str] | None) -> int:
    if args.long_epochs is None:
        args.long_epochs = args.epochs
    if args.quick:
        args.steps, args.long_steps, args.batch, args.crop, args.epochs = 12, 12, 2, 128, 2
        args.long_crop = None
        args.no_tta = True
    out = Path(args.out)

    if args.table:
        table = render_table(_read(out), CONFIGS)
        update_benchmarks_md(table, REPO / "BENCHMARKS.md")
        print(table)
        return 0

    if args.one:  # the child: one configuration, one seed
        cfg = resolve_config(args.one, args)
        tta = not args.no_tta and (args.tta_configs == "all"
                                   or args.one in args.tta_configs.split(","))
        figures = run_one(cfg, int(args.seeds), Path(args.data), tta=tta)
        Path(args.one_out).write_text(json.dumps(figures, indent=2))
        return 0

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; valid: {', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.rescore:
        return rescore(args, names, seeds, out)
    results = _read(out)
    results["meta"] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "split": "train 0-23, held out 24-29 (full 512x512)", "data": str(args.data),
    }
    failed = 0
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for seed in seeds:
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                child_out = Path(tmp) / "one.json"
                cmd = [sys.executable, __file__, *passthrough, "--one", name,
                       "--seeds", str(seed), "--one-out", str(child_out)]
                print(f"=== {name} seed {seed} (load {load_average()}) ===", flush=True)
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO)
                if proc.returncode != 0 or not child_out.is_file():
                    print(f"=== {name} seed {seed} FAILED (exit {proc.returncode})", flush=True)
                    failed += 1
                    continue
                figures = json.loads(child_out.read_text())
            figures["command"] = " ".join([".venv/bin/python", "benchmarks/transfer_isbi.py",
                                           *passthrough])
            figures["total_wall_s"] = round(time.perf_counter() - t0, 1)
            results = _read(out)  # another invocation may have merged meanwhile
            key = result_key(name, seed, args)
            if args.tag:
                figures["tag"] = args.tag
            results.setdefault("runs", {})[key] = figures
            _write(out, results)
            print(f"=== {name} seed {seed}: pixel error {figures['plain']['pixel_error']:.4f}"
                  f" (TTA {figures.get('tta', {}).get('pixel_error', float('nan')):.4f}), "
                  f"train {figures['train_wall_s']:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
