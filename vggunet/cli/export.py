"""`vggunet export`: a saved model as .keras, SavedModel, TFLite or ONNX."""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.choices import EXPORT_FORMATS
from vggunet.cli.args import parse_size, positive_int




def _cmd_export(args: argparse.Namespace) -> int:
    from vggunet.export import export_model

    out = export_model(args.model, args.out, args.format, input_size=args.input_size,
                       keep_precision=args.keep_precision, keep_optimizer=args.keep_optimizer,
                       opset=args.opset)
    files = [out] if out.is_file() else [f for f in out.rglob("*") if f.is_file()]
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    print(f"exported {args.model} to {out} ({size_mb:.1f} MB)")
    return 0


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export a saved model for inference or serving",
        description="Export a .keras model as .keras (no optimizer state), a TensorFlow "
                    "SavedModel folder for TF Serving (any HxW), TFLite (fixed HxW) or ONNX "
                    "(any HxW; needs the export extra). Mixed-precision models are exported "
                    "with float32 compute.")
    p.add_argument("--model", required=True, help="a saved .keras model (e.g. checkpoints/best)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="destination: a .keras/.tflite/.onnx file, or a folder for savedmodel")
    p.add_argument("--format", default=None, metavar="FORMAT",
                   help=f"one of {', '.join(EXPORT_FORMATS)} (default: from the --out suffix "
                        f".keras, .tflite or .onnx)")
    p.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                   help="fix the input size; required for tflite unless the model has a fixed "
                        "size (default: any HxW)")
    p.add_argument("--keep-precision", action="store_true",
                   help="savedmodel: keep a mixed-precision compute policy (default: float32)")
    p.add_argument("--keep-optimizer", action="store_true",
                   help="keras: keep the training configuration and optimizer state")
    p.add_argument("--opset", type=positive_int, default=None,
                   help="onnx: ONNX opset version (default: tf2onnx's)")
    p.set_defaults(func=_cmd_export)
