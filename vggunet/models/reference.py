"""Reference U-Nets: the 2D U-Net of the Coursera lab (C4W3), layer for layer.

Its parameter count (8,640,471 with the defaults) and layer names are fixed: tests compare
them with the lab's summary. The 3D U-Net of the AI-for-Medicine lab is in
`vggunet.models.unet3d`.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from vggunet.checks import check_int
from vggunet.errors import ArgumentError
from vggunet.models.blocks import conv_block, upsampling_block
from vggunet.models.model import SegmentationModel


def _check_lab_input(input_size: Sequence[int]) -> None:
    if len(input_size) != 3:
        raise ArgumentError(
            f"input_size must be (height, width, channels), got {tuple(input_size)!r}."
        )
    for label, dim in zip(("height", "width"), input_size[:2]):
        if dim is not None and (int(dim) < 16 or int(dim) % 16):
            raise ArgumentError(
                f"input {label} {dim} must be a positive multiple of 16 (the lab U-Net pools "
                f"4 times and has no padding layer); got input_size={tuple(input_size)!r}."
            )


def build_unet(
    input_size: Sequence[int] = (96, 128, 3), n_filters: int = 32, n_classes: int = 23
) -> SegmentationModel:
    """The 2D U-Net of the Coursera lab (C4W3), built from `conv_block` and `upsampling_block`.

    Four encoder blocks (dropout 0.3 on the fourth) and a bottleneck block with dropout 0.3,
    four transpose-conv decoder blocks, a 3×3 conv and a 1×1 conv head producing logits.
    With the defaults `count_params()` is exactly 8,640,471. The roles of its layers are
    recorded: `encoder_block*` (their skip outputs as `skip`), `bottleneck_*`, `decoder_*`,
    `head_conv`.

    Args:
        input_size: `(H, W, C)`; H and W must be multiples of 16.
        n_filters: filters of the first block (doubled at each level).
        n_classes: output channels (logits, no activation).

    Returns:
        The uncompiled `SegmentationModel` (a Functional `keras.Model`).

    Example:
        >>> model = build_unet()
        >>> model.count_params()
        8640471
        >>> [name for name, role in model.roles.items() if role == "skip"]
        ['encoder_block1_conv2', 'encoder_block2_conv2', 'encoder_block3_conv2',
         'encoder_block4_dropout']
    """
    check_int(n_filters, "n_filters")
    check_int(n_classes, "n_classes")
    _check_lab_input(input_size)
    inputs = keras.Input(input_size, name="input_image")
    cblock1 = conv_block(inputs, n_filters, name="encoder_block1")
    cblock2 = conv_block(cblock1[0], n_filters * 2, name="encoder_block2")
    cblock3 = conv_block(cblock2[0], n_filters * 4, name="encoder_block3")
    cblock4 = conv_block(cblock3[0], n_filters * 8, dropout_prob=0.3, name="encoder_block4")
    cblock5 = conv_block(
        cblock4[0], n_filters * 16, dropout_prob=0.3, max_pooling=False, name="bottleneck"
    )
    ublock6 = upsampling_block(cblock5[0], cblock4[1], n_filters * 8, name="decoder_block1")
    ublock7 = upsampling_block(ublock6, cblock3[1], n_filters * 4, name="decoder_block2")
    ublock8 = upsampling_block(ublock7, cblock2[1], n_filters * 2, name="decoder_block3")
    ublock9 = upsampling_block(ublock8, cblock1[1], n_filters, name="decoder_block4")
    conv9 = layers.Conv2D(
        n_filters, 3, activation="relu", padding="same", kernel_initializer="he_normal",
        name="decoder_final_conv",
    )(ublock9)
    conv10 = layers.Conv2D(n_classes, 1, padding="same", name="head_conv")(conv9)
    skips = [block[1] for block in (cblock1, cblock2, cblock3, cblock4)]
    return SegmentationModel(inputs=inputs, outputs=conv10, name="unet", skips=skips)
