"""The README's backbone table: every registry entry's default U-Net, side by side.

For each key of `vggunet.ENCODERS`: its skip layers (high to low resolution) and bottleneck
source, its preprocessing, its minimum input size, the parameters of its default U-Net
(`build_vgg_unet(name, num_classes=2, weights=None)`) and that U-Net's forward GFLOPs per
224×224 image. Usage (from the repository root; builds 40 models, a few minutes):

    .venv/bin/python benchmarks/backbone_table.py            # prints the markdown table
    .venv/bin/python benchmarks/backbone_table.py --out benchmarks/results/backbone_table.md

GFLOPs are counted, not profiled: 2 × the multiply-adds of every Conv2D, Conv2DTranspose,
DepthwiseConv2D, SeparableConv2D and Dense layer (a Dense layer on a feature map, as in
ConvNeXt, once per pixel), from the static shapes of the U-Net built for a fixed 224×224×3
input (its parameter count is that of the any-size model). Element-wise layers (BatchNorm,
LayerNorm, activations, pooling, resizing, squeeze-and-excitation scaling) are left out: a few
percent of the work. Layers that Keras names automatically are shown as `#i`, the index in
`keras.applications.<Backbone>(include_top=False).layers`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import layer_flops  # noqa: E402  (the one FLOP count of the benchmarks)

SIZE = 224
COLUMNS = ("backbone", "skips (stride 1/2 → 16)", "bottleneck source (stride 32)",
           "preprocessing", "min input", "U-Net params", "GFLOPs / 224² image")
PREPROCESSING = {"caffe": "caffe (BGR − mean)", "tf": "tf ([−1, 1])",
                 "torch": "torch (ImageNet mean/std)", "none": "in the model (Keras layers)"}


def _ref(ref: Any) -> str:
    return f"#{ref}" if isinstance(ref, int) else f"`{ref}`"


def backbone_row(name: str) -> dict[str, Any]:
    """Builds the default U-Net of one registry entry and measures it.

    Args:
        name: a key of `ENCODERS`.

    Returns:
        The row's values (taps, preprocessing, minimum size, params, GFLOPs, build seconds).
    """
    import keras

    import vggunet as vu
    from vggunet.inspect import all_layers

    spec = vu.get_encoder_spec(name)
    start = time.perf_counter()
    model = vu.build_vgg_unet(name, input_shape=(SIZE, SIZE, 3), num_classes=2, weights=None)
    row = {
        "backbone": name,
        "skips": ", ".join(_ref(ref) for ref in spec.skip_layers),
        "bottleneck": _ref(spec.bottleneck_source),
        "preprocessing": PREPROCESSING[spec.preprocessing],
        "min_input": f"{spec.min_input_size}" + (" (fixed size)" if spec.fixed_size else ""),
        "params": model.count_params(),
        "gflops": sum(layer_flops(layer) for layer in all_layers(model)) / 1e9,
        "build_s": time.perf_counter() - start,
    }
    del model
    keras.backend.clear_session()
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table.

    Args:
        rows: from `backbone_row`.

    Returns:
        The table, one line per backbone.
    """
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['backbone']} | {row['skips']} | {row['bottleneck']} | "
                     f"{row['preprocessing']} | {row['min_input']} | {row['params']:,} | "
                     f"{row['gflops']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Prints (and optionally writes) the table.

    Args:
        argv: command-line arguments (`--out PATH`, `--only NAME ...`).

    Returns:
        0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--only", nargs="+", help="these backbones only")
    args = parser.parse_args(argv)
    from vggunet.models.registry import ENCODERS

    rows = []
    for name in args.only or list(ENCODERS):
        rows.append(backbone_row(name))
        print(f"{name}: {rows[-1]['params']:,} params, {rows[-1]['gflops']:.1f} GFLOPs "
              f"({rows[-1]['build_s']:.0f} s)", file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.out:
        from vggunet.fileio import atomic_write

        atomic_write(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
