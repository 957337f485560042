"""Flags that describe an encoder U-Net, and building the model they describe.

The option lists below mirror `vggunet.models.blocks.DECODERS` and
`vggunet.models.precision.PRECISIONS`, which import Keras: the parser must not (`vggunet
--help` stays instant). tests/test_cli.py asserts that they are equal.
"""

from __future__ import annotations

import argparse
from typing import Any

from vggunet.choices import DECODERS, PRECISIONS
from vggunet.cli.args import (
    _bn_momentum_arg, _weights_arg, decoder_filters_arg, layer_ref_arg, layer_refs_arg,
    parse_size, positive_int,
)



def backbone_arg(text: str) -> str:
    """The registry key a `--backbone` value names (case, `_`, `-` and spaces ignored).

    Args:
        text: e.g. `"ConvNeXt_Tiny"`.

    Returns:
        The key, e.g. `"convnexttiny"`; an unknown name raises `argparse.ArgumentTypeError`
        listing the backbones.

    Example:
        >>> backbone_arg("EfficientNet-B0"), backbone_arg("mobilenet_v3_large")
        ('efficientnetb0', 'mobilenetv3large')
    """
    from vggunet.errors import ArgumentError
    from vggunet.models.registry import backbone_key

    try:
        return backbone_key(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_args(parser: argparse.ArgumentParser, weights_default: str = "none") -> None:
    """Flags shared by commands that build an encoder U-Net.

    Args:
        parser: the subcommand's parser, changed in place.
        weights_default: the `--weights` default (`"none"` or `"imagenet"`).
    """
    from vggunet.models.registry import ENCODERS

    parser.add_argument("--backbone", default="vgg16", type=backbone_arg, metavar="NAME",
                        help=f"encoder backbone (default vgg16): {', '.join(ENCODERS)}; "
                             f"case, '_' and '-' are ignored (convnext_tiny = ConvNeXtTiny)")
    parser.add_argument("--weights", type=_weights_arg, default=_weights_arg(weights_default),
                        help="imagenet, none, or a path to a backbone weights file "
                             f"(default {weights_default})")
    parser.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                        help="fixed input size; default: any size")
    parser.add_argument("--channels", type=positive_int, default=3, help="input channels")
    parser.add_argument("--num-classes", type=positive_int, default=2, help="output classes")
    parser.add_argument("--decoder", default="upsampling", choices=DECODERS)
    # --no-X too: a recipe switches these on, and a flag given on the command line wins.
    parser.add_argument("--decoder-batchnorm", action=argparse.BooleanOptionalAction,
                        default=False, help="BatchNorm in bottleneck and decoder")
    parser.add_argument("--skip-batchnorm", action=argparse.BooleanOptionalAction,
                        default=False,
                        help="BatchNorm on each skip tensor and the bottleneck input "
                             "(standardises pretrained features with large scales)")
    parser.add_argument("--bn-momentum", type=_bn_momentum_arg, default=None, metavar="M",
                        help="momentum of those decoder-side BatchNorms (default 0.9)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--decoder-filters", type=decoder_filters_arg, default=None,
                        metavar="N,N,...",
                        help="channels per decoder stage, deepest first "
                             "(default 512,256,128,64,64)")
    parser.add_argument("--bottleneck-filters", type=positive_int, default=None, metavar="N",
                        help="channels of the bottleneck convolutions (default 1024)")
    # With --decoder-filters these give a shallower U-Net: one decoder stage per skip layer.
    parser.add_argument("--skip-layers", type=layer_refs_arg, default=None, metavar="L,L,...",
                        help="backbone layers (names or indices) to skip-connect, high to low "
                             "resolution (default: the backbone's registry entry)")
    parser.add_argument("--bottleneck-source", type=layer_ref_arg, default=None, metavar="L",
                        help="backbone layer (name or index) the bottleneck grows from")


def build_model_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """Builds the encoder U-Net the model flags describe.

    Args:
        args: parsed flags from `add_model_args`.
        **overrides: extra `build_vgg_unet` keywords (e.g. `freeze=`).

    Returns:
        The uncompiled model.
    """
    from vggunet.models.unet import build_vgg_unet
    from vggunet.models.weights import ImagenetWeightsUnavailable

    height, width = args.input_size if args.input_size else (None, None)
    kwargs: dict[str, Any] = {}
    if getattr(args, "decoder_filters", None):
        kwargs["decoder_filters"] = args.decoder_filters
    if getattr(args, "bottleneck_filters", None):
        kwargs["bottleneck_filters"] = args.bottleneck_filters
    if getattr(args, "skip_layers", None):
        kwargs["skip_layers"] = list(args.skip_layers)
    if getattr(args, "bottleneck_source", None) is not None:
        kwargs["bottleneck_source"] = args.bottleneck_source
    if getattr(args, "skip_batchnorm", False):
        kwargs["skip_batchnorm"] = True
    if getattr(args, "bn_momentum", None) is not None:
        kwargs["bn_momentum"] = args.bn_momentum
    kwargs.update(overrides)
    try:
        return build_vgg_unet(
            args.backbone, input_shape=(height, width, args.channels),
            num_classes=args.num_classes, weights=args.weights, decoder=args.decoder,
            decoder_batchnorm=args.decoder_batchnorm, precision=args.precision, **kwargs,
        )
    except ImagenetWeightsUnavailable as exc:
        raise ImagenetWeightsUnavailable(
            f"{exc} On the command line: --weights none (random encoder) or "
            f"--weights /path/to/weights.h5."
        ) from None
