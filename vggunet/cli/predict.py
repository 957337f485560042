"""`vggunet predict`: masks and overlays for an image or a folder."""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.cli.args import non_negative_int, positive_int
from vggunet.errors import CliError, MissingFileError


def _predict_file(model: Any, source: Any, out: Any, args: argparse.Namespace,
                  overlap: int) -> list:
    import numpy as np

    from vggunet import inference as P

    image = P.read_image(source, args.channels)
    if args.tile:
        proba = np.asarray(P.predict_tiled(model, image, tile=args.tile, overlap=overlap,
                                           tta=args.tta, mirror_pad=args.mirror_pad))
    else:
        proba = np.asarray(P.predict_proba(model, image, tta=args.tta,
                                           mirror_pad=args.mirror_pad))
    mask = (proba[..., 0] > 0.5 if proba.shape[-1] == 1 else np.argmax(proba, -1))
    mask = mask.astype(np.int32)
    written = [P.save_mask_png(mask, out / f"{source.stem}.png")]
    if not args.no_overlay:
        written.append(P.save_overlay(image, mask, out / f"{source.stem}_overlay.png"))
    return written


def _cmd_predict(args: argparse.Namespace) -> int:
    import inspect
    from pathlib import Path

    from vggunet import inference as P
    from vggunet.saving import load_model

    source = Path(args.input)
    if not source.exists():
        raise MissingFileError(f"--input {source} does not exist")
    if args.overlap is not None and args.tile is None:
        raise CliError("--overlap needs --tile")
    overlap = args.overlap if args.overlap is not None else (
        min(64, args.tile // 4) if args.tile else 0)
    if args.tile is not None and overlap >= args.tile:
        raise CliError(f"--overlap {overlap} must be smaller than --tile {args.tile}")
    if args.channels not in (1, 3):
        raise CliError(f"--channels must be 1 or 3, got {args.channels}")
    out = Path(args.out)
    if source.is_file() and out.resolve() == source.parent.resolve():
        raise CliError("--out must not be the folder of the input image (it would be "
                       "overwritten)")
    model = load_model(args.model, compile=False)
    folder_takes_overlap = "overlap" in inspect.signature(P.predict_folder).parameters
    if source.is_dir() and (args.overlap is None or folder_takes_overlap):
        kwargs: dict[str, Any] = dict(tile=args.tile, tta=args.tta, overlay=not args.no_overlay,
                                      channels=args.channels, mirror_pad=args.mirror_pad)
        if args.overlap is not None:
            kwargs["overlap"] = overlap
        written = P.predict_folder(model, source, out, **kwargs)
    else:
        files = [source] if source.is_file() else sorted(
            p for p in source.iterdir() if p.is_file() and p.suffix.lower() in P.IMAGE_SUFFIXES)
        out.mkdir(parents=True, exist_ok=True)
        written = [path for f in files for path in _predict_file(model, f, out, args, overlap)]
    for path in written:
        print(path)
    print(f"wrote {len(written)} file(s) to {out}")
    return 0


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="segment images with a saved model",
                       description="Write a class-index mask PNG (and an overlay) per image.")
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
    p.add_argument("--channels", type=positive_int, default=3,
                   help="channels the model expects (default 3)")
    p.set_defaults(func=_cmd_predict)
