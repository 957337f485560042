"""`vggunet predict`: masks and overlays for an image or a folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vggunet.cli.args import non_negative_int, parse_class_names, positive_int
from vggunet.cli.volume_args import add_volume_data_args, add_window_args
from vggunet.cli.volume_commands import add_volume_output_args, is_volume_model, predict_volumes
from vggunet.console import resolve_say
from vggunet.errors import CliError, MissingFileError


def _check_predict_args(args: argparse.Namespace) -> tuple[Path, Path]:
    """Checks the flags against each other and the input; returns (input, output folder)."""
    source, out = Path(args.input), Path(args.out)
    if not source.exists():
        raise MissingFileError(f"--input {source} does not exist")
    if args.overlap is not None and args.tile is None:
        raise CliError("--overlap needs --tile")
    if args.tile is not None and args.overlap is not None and args.overlap >= args.tile:
        raise CliError(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    if source.is_file() and out.resolve() == source.parent.resolve():
        raise CliError("--out must not be the folder of the input image (it would be "
                       "overwritten)")
    return source, out


def _cmd_predict(args: argparse.Namespace) -> int:
    from vggunet import inference
    from vggunet.saving import load_model

    source, out = _check_predict_args(args)
    model = load_model(args.model, compile=False)
    if is_volume_model(model):
        if args.tile is not None:
            raise CliError("--tile is for 2D images; volume models predict in --patch windows")
        return predict_volumes(args, model, source, out)
    options: dict[str, Any] = dict(tile=args.tile, overlap=args.overlap, tta=args.tta,
                                   channels=args.channels, mirror_pad=args.mirror_pad,
                                   class_names=parse_class_names(args.class_names))
    if source.is_dir():
        written = inference.predict_folder(model, source, out, overlay=not args.no_overlay,
                                           verbose=not args.quiet, **options)
    else:
        overlay = None if args.no_overlay else out / f"{source.stem}_overlay.png"
        written = inference.predict_image_file(model, source, out / f"{source.stem}.png",
                                               overlay, verbose=not args.quiet, **options)
    say = resolve_say()  # the written files are the command's result: shown even with --quiet
    for path in written:
        say(str(path))
    say(f"wrote {len(written)} file(s) to {out}")
    return 0


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="segment images with a saved model",
                       description="Write a class-index mask PNG (and an overlay) per image; "
                                   "for volume models a NAME.nii.gz label map per volume "
                                   "(.nii/.nii.gz/.npy/.h5 files, a folder or a data root).")
    p.add_argument("--model", required=True, help="a saved .keras model")
    p.add_argument("--input", required=True, metavar="DIR_OR_FILE", help="an image or a folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--tile", type=positive_int, default=None, metavar="N",
                   help="predict in NxN tiles (large images)")
    p.add_argument("--overlap", type=non_negative_int, default=None, metavar="N",
                   help="tile overlap in pixels (default min(64, tile/4))")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (flips)")
    p.add_argument("--mirror-pad", type=non_negative_int, default=0, metavar="N",
                   help="add N mirrored pixels of context on each side before predicting "
                        "(the U-Net paper's border handling; default 0)")
    p.add_argument("--no-overlay", action="store_true", help="masks only, no overlay PNGs")
    p.add_argument("--class-names", default=None, metavar="a,b,...|FILE",
                   help="add a legend (colour and name of each class shown) to the overlays: "
                        "comma-separated names, or a file of 'index name' lines (classes.txt)")
    p.add_argument("--channels", type=positive_int, default=3,
                   help="channels the model expects (default 3): grey and RGB files convert "
                        "to 1 or 3; other counts need files with that many channels "
                        "(.npy (H, W, C) arrays, LA = 2, RGBA = 4)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (the written files are still listed)")
    add_window_args(p)
    add_volume_data_args(p, training=False)
    add_volume_output_args(p, evaluate=False)
    p.set_defaults(func=_cmd_predict)
