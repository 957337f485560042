"""ISBI 2012: a VGG16 U-Net fine-tuned on images 0-23, evaluated on the held-out images 24-29.

Usage (from the repository root):
    .venv/bin/python benchmarks/isbi_finetune.py --phase1-epochs 4 --phase2-epochs 4

Writes the figures to benchmarks/results/isbi_finetune.json and prints a markdown table row for
BENCHMARKS.md. Label 255 = cell (class 1), 0 = membrane (class 0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "isbi2012"
TRAIN_IDS = range(0, 24)
HELD_OUT_IDS = range(24, 30)


def _split(data: Path) -> tuple[list, list]:
    from vggunet.data import find_pairs

    pairs = find_pairs(data / "image", data / "label")
    by_id = {int(image.stem): (image, mask) for image, mask in pairs}
    return [by_id[i] for i in TRAIN_IDS], [by_id[i] for i in HELD_OUT_IDS]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> dict:
    """Trains and evaluates once; returns the figures."""
    import keras

    from vggunet.data import make_dataset
    from vggunet.evaluate import evaluate
    from vggunet.training import finetune
    from vggunet.unet import build_vgg_unet

    keras.utils.set_random_seed(args.seed)
    train_pairs, held_out = _split(Path(args.data))
    train_ds = make_dataset(
        pairs=train_pairs, num_classes=2, mask_format="binary", channels=3,
        crop=(args.crop, args.crop), flip=True, augment=args.augment, batch_size=args.batch,
        shuffle=True, seed=args.seed, repeat=True, cache=True,
    )
    val_ds = make_dataset(pairs=held_out, num_classes=2, mask_format="binary", channels=3,
                          batch_size=2, shuffle=False)
    weights = None if args.weights in (None, "none") else args.weights
    model = build_vgg_unet(args.backbone, input_shape=(None, None, 3), num_classes=2,
                           weights=weights, decoder_batchnorm=args.decoder_batchnorm,
                           precision=args.precision)
    start = time.perf_counter()
    result = finetune(
        model, train_ds, val_ds, out_dir=args.out, phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs, phase1_lr=args.phase1_lr, phase2_lr=args.phase2_lr,
        steps_per_epoch=args.steps_per_epoch, loss=args.loss, tensorboard=False,
        verbose=2, unfreeze=args.unfreeze,
    )
    train_s = time.perf_counter() - start
    scores = evaluate(model, val_ds, num_classes=2, class_names=["membrane", "cell"],
                      out_json=Path(args.out) / "held_out_metrics.json", verbose=True)
    steps = (args.phase1_epochs + args.phase2_epochs) * args.steps_per_epoch
    return {
        "date": dt.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "backbone": args.backbone,
        "weights": args.weights or "none",
        "precision": args.precision,
        "budget": f"{steps} steps of batch {args.batch} on {args.crop}x{args.crop} crops "
                  f"({args.phase1_epochs}+{args.phase2_epochs} epochs x {args.steps_per_epoch})",
        "train_wall_s": round(train_s, 1),
        "pixel_error": scores["pixel_error"],
        "mean_iou": scores["mean_iou"],
        "membrane_dice": scores["per_class_dice"][0],
        "cell_dice": scores["per_class_dice"][1],
        "membrane_iou": scores["per_class_iou"][0],
        "cell_iou": scores["per_class_iou"][1],
        "stopped_reason": result.stopped_reason,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--weights", default="none", help="none, imagenet or a weights file")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--phase1-epochs", type=int, default=4)
    parser.add_argument("--phase2-epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--phase1-lr", type=float, default=1e-3)
    parser.add_argument("--phase2-lr", type=float, default=1e-4)
    parser.add_argument("--unfreeze", default="top2")
    parser.add_argument("--loss", default="ce+dice")
    parser.add_argument("--augment", default="flip,rot90")
    parser.add_argument("--decoder-batchnorm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "runs" / "isbi_finetune"))
    args = parser.parse_args(argv)
    figures = run(args)
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "isbi_finetune.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(
        f"| {figures['backbone']} U-Net, {figures['weights']} encoder, {figures['precision']} | "
        f"{figures['budget']} | {figures['pixel_error']:.4f} | {figures['membrane_dice']:.3f} | "
        f"{figures['cell_dice']:.3f} | {figures['mean_iou']:.3f} | "
        f"{figures['train_wall_s']:.0f} s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
