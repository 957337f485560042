"""Forward GFLOPs per patch of the lab's depth-4 3D U-Net and of the MONAI nets that
`benchmarks/volumes.py` times, so its step times can be read as GFLOP/s (BENCHMARKS.md).

FLOPs are 2 × the multiply-adds of the convolutions: counted from the layer shapes for Keras,
with `torch.utils.flop_counter.FlopCounterMode` for MONAI (its nets configured as in
`benchmarks/volumes.py`). Needs the `bench` extra (torch, monai).

    python benchmarks/volumes_flops.py [--patch 160 160 16]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def keras_gflops(patch: tuple[int, int, int], channels: int = 4) -> float:
    """Forward GFLOPs of `build_unet_3d(preset="assignment")` on one patch."""
    import keras
    import numpy as np

    from vggunet.models.unet3d import build_unet_3d

    model = build_unet_3d((*patch, channels), preset="assignment", data_format="channels_last")
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            fan_in = int(np.prod(layer.kernel_size)) * int(layer.input.shape[-1])
            total += 2 * int(np.prod(layer.output.shape[1:])) * fan_in
    return total / 1e9


def monai_gflops(name: str, patch: tuple[int, int, int], channels: int = 4) -> float:
    """Forward GFLOPs of MONAI's UNet/BasicUNet as `benchmarks/volumes.py` builds them."""
    import torch
    from monai.networks.nets import BasicUNet, UNet
    from torch.utils.flop_counter import FlopCounterMode

    from volumes import MONAI

    cls = UNet if name == "monai_unet" else BasicUNet
    net = cls(spatial_dims=3, in_channels=channels, out_channels=3, **MONAI[name]["kwargs"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, channels, *patch))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=(160, 160, 16))
    patch = tuple(parser.parse_args().patch)
    print(f"lab depth 4 (vggunet): {keras_gflops(patch):.1f} GFLOP forward")
    for name in ("monai_unet", "monai_basicunet"):
        print(f"{name}: {monai_gflops(name, patch):.1f} GFLOP forward")


if __name__ == "__main__":
    main()
