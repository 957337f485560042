"""The op-level profile parser of `benchmarks/profile_step.py` (issue 4's "show the profile")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_step as P  # noqa: E402

LAYERS = {"block1_conv1": ("Conv2D", 1e9), "decoder_stage1_up": ("UpSampling2D", 0.0),
          "bottleneck_conv1": ("Conv2D", 2e9)}


def test_self_time_subtracts_nested_children_once():
    events = [(0, 100, "call"), (10, 30, "a"), (15, 10, "a.inner"), (50, 20, "b"),
              (200, 5, "c")]
    assert P.self_times(events) == {"call": 50, "a": 20, "a.inner": 10, "b": 20, "c": 5}


def test_categorize_conv_directions_layers_and_runtime_events():
    cat = P.categorize
    assert cat("vgg16_unet_1/block1_conv1_1/Relu:_MklNativeFusedConv2D", LAYERS) == \
        ("conv forward", "block1_conv1")
    assert cat("gradient_tape/vgg16_unet_1/bottleneck_conv1_1/convolution/"
               "Conv2DBackpropFilter:_MklNativeConv2DBackpropFilterWithBias", LAYERS) == \
        ("conv backward (kernel gradient)", "bottleneck_conv1")
    assert cat("gradient_tape/m/block1_conv1_1/convolution/Conv2DBackpropInput:"
               "_MklNativeConv2DBackpropInput", LAYERS) == \
        ("conv backward (input gradient)", "block1_conv1")
    assert cat("gradient_tape/m/decoder_stage1_up_1/Sum:Sum", LAYERS) == \
        ("UpSampling2D backward (non-conv ops)", "decoder_stage1_up")
    assert cat("m/block1_conv1_1/convolution/Cast:Cast", LAYERS) == \
        ("casts (mixed precision)", None)
    assert cat("adam/Mul_3:Mul", LAYERS) == ("optimizer update", None)
    assert cat("KernelAndDeviceFunc::Run", LAYERS) == ("runtime (not an op)", None)
    assert cat("ExecutorState::Process", LAYERS) == ("runtime (not an op)", None)
