"""The few custom layers vggunet models use, registered so `.keras` files load in safe mode.

Every layer here is written with `keras.ops` only, so models run on any Keras backend, and each
one returns its constructor arguments from `get_config()`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from vggunet._serializables import PACKAGE
from vggunet.checks import check_choice, check_int
from vggunet.errors import ArgumentError

# Per-channel statistics of keras.applications' preprocess_input modes.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESSING_MODES = ("caffe", "torch", "tf", "unit", "none")


def _caffe_channel_order(channels: int) -> list[int]:
    """Source channel of each output channel of mode "caffe": every full group of three reversed.

    Example:
        >>> _caffe_channel_order(3), _caffe_channel_order(4), _caffe_channel_order(6)
        ([2, 1, 0], [2, 1, 0, 3], [2, 1, 0, 5, 4, 3])
    """
    full = channels - channels % 3
    return [3 * (c // 3) + 2 - c % 3 if c < full else c for c in range(channels)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class BackbonePreprocess(layers.Layer):
    """Applies a backbone's `preprocess_input` inside the model, so the model takes raw pixels.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`:
    `"caffe"` (RGB to BGR, minus the ImageNet BGR mean; VGG and ResNet v1), `"torch"` (to [0, 1],
    then ImageNet mean/std), `"tf"` (to [-1, 1]), `"unit"` (to [0, 1]) and `"none"`.

    Any number of channels C: the ImageNet statistics are cycled over the channels, so channel
    c is treated like RGB channel `c % 3` (the pretrained first convolution is tiled the same
    way, see `vggunet.models.weights.tile_input_kernel`). `"torch"` uses mean and std of RGB
    channel `c % 3`; `"caffe"` reverses every full group of three channels (R, G, B → B, G, R;
    channels of a last group of one or two keep their order) and subtracts the BGR mean of
    position `c % 3`. An image whose channels repeat R, G, B (RGBRGB for C = 6) is thus
    preprocessed into the RGB image's result repeated; for C = 4 (R, G, B, NIR) the fourth
    channel is treated like the first, R in "torch" mode and B (103.939 subtracted) in "caffe"
    mode. `"tf"`, `"unit"` and `"none"` treat every channel alike.

    Args:
        mode: one of `PREPROCESSING_MODES`.

    Example:
        >>> import numpy as np
        >>> rgb = np.array([[[[10.0, 20.0, 30.0]]]], "float32")
        >>> layer = BackbonePreprocess("caffe")
        >>> np.asarray(layer(rgb)).astype("float64").round(3).tolist()
        [[[[-73.939, -96.779, -113.68]]]]
        >>> np.asarray(layer(np.concatenate([rgb, rgb], -1))).astype("float64").round(3).tolist()
        [[[[-73.939, -96.779, -113.68, -73.939, -96.779, -113.68]]]]
    """

    def __init__(self, mode: str = "caffe", **kwargs: Any) -> None:
        # Preprocessing stays in float32 whatever the model's compute dtype: bfloat16 cannot hold
        # 131.32 (pixel minus mean) to better than a whole unit.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mode = check_choice(mode, PREPROCESSING_MODES, "preprocessing mode")

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if self.mode in ("caffe", "torch") and channels is None:
            raise ArgumentError(
                f"Preprocessing mode {self.mode!r} needs a known channel count, got input shape "
                f"{tuple(input_shape)}; give the input's last dimension."
            )
        super().build(input_shape)

    def _cycled(self, values: tuple[float, ...], channels: int) -> Any:
        return ops.convert_to_tensor([values[c % 3] for c in range(channels)], dtype="float32")

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, "float32")
        channels = int(inputs.shape[-1]) if self.mode in ("caffe", "torch") else 0
        if self.mode == "caffe":
            # Three channels: the flip keras.applications does (a gather gives the same values).
            x = ops.flip(x, axis=-1) if channels == 3 else ops.take(
                x, _caffe_channel_order(channels), axis=-1)
            return x - self._cycled(_CAFFE_BGR_MEAN, channels)
        if self.mode == "torch":
            mean = self._cycled(_TORCH_MEAN, channels)
            std = self._cycled(_TORCH_STD, channels)
            return (x / 255.0 - mean) / std
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def _reflect_indices(size: Any, pad: Any) -> Any:
    """Source indices of an axis of length `size` reflect-padded by `pad` at its end.

    Same as numpy's `mode="reflect"` (edge not repeated), including pads longer than the axis,
    which reflect back and forth with period `2 * (size - 1)`.

    Args:
        size: the axis length (an int or a scalar tensor).
        pad: how many entries to append.

    Returns:
        An int32 index vector of length `size + pad`.
    """
    index = ops.arange(size + pad, dtype="int32")
    # max(.., 1) keeps a length-1 axis valid: every index then reads element 0.
    period = ops.maximum(2 * (size - 1), 1)
    index = ops.mod(index, period)
    return ops.where(index < size, index, period - index)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadToMultiple(layers.Layer):
    """Pads height and width at the bottom/right up to the next multiple of `multiple`.

    Reflection padding keeps image statistics at the border (zeros would look like a dark frame
    to a pretrained encoder). Paired with `CropToReference` at the output, this lets a network
    whose total stride is `multiple` take any H×W >= `multiple`.

    Args:
        multiple: the total stride of the network (32 for five pooling stages).
        mode: `"reflect"` or `"constant"` (zeros).
    """

    def __init__(self, multiple: int = 32, mode: str = "reflect", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiple = check_int(multiple, "multiple")
        self.mode = check_choice(mode, ("reflect", "constant"), "mode")

    def call(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        pad_h = (self.multiple - shape[1] % self.multiple) % self.multiple
        pad_w = (self.multiple - shape[2] % self.multiple) % self.multiple
        if self.mode == "constant":
            return ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        # Reflection as a gather rather than ops.pad(mode="reflect"): the PyTorch backend's
        # reflect pad rejects NHWC tensors whose padding is zero (an input that is already a
        # multiple), and a gather gives the same result on every backend.
        x = ops.take(inputs, _reflect_indices(shape[1], pad_h), axis=1)
        return ops.take(x, _reflect_indices(shape[2], pad_w), axis=2)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def padded(dim: int | None) -> int | None:
            return None if dim is None else -(-dim // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "multiple": self.multiple, "mode": self.mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CropToReference(layers.Layer):
    """Crops `x` (top-left anchored) to the height and width of `reference`.

    Called as `CropToReference()([x, reference])`; the inverse of `PadToMultiple`.
    """

    def call(self, inputs: Any) -> Any:
        x, reference = inputs
        x_shape = ops.shape(x)
        ref_shape = ops.shape(reference)
        return ops.slice(x, [0, 0, 0, 0], [x_shape[0], ref_shape[1], ref_shape[2], x_shape[3]])

    def compute_output_shape(self, input_shapes: list) -> tuple:
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def _fit_indices(size: Any, target: Any, anchor: str) -> Any:
    """Source indices that crop or edge-pad an axis of length `size` to length `target`.

    Args:
        size: the axis length (an int or a scalar tensor).
        target: the wanted length.
        anchor: `"center"` (centre on centre; an odd difference leaves the extra pixel at the
            end) or `"top_left"`.

    Returns:
        An int32 index vector of length `target` into `range(size)`; indices past either end
        are clipped, which repeats the edge.
    """
    offset = (size - target) // 2 if anchor == "center" else 0
    index = ops.arange(target, dtype="int32") + ops.cast(offset, "int32")
    return ops.clip(index, 0, ops.cast(size, "int32") - 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CropOrPadToReference(layers.Layer):
    """Crops or edge-pads `x` to the height and width of `reference`, per axis.

    Called as `CropOrPadToReference()([x, reference])`. Backbones with `"valid"` padding
    (Xception, Inception, NASNet) give feature maps that are not exact halvings of the input
    (Xception at 224: 109, 55, 28, 14, 7), so an upsampled map can be a few pixels larger or
    smaller than its skip, and the last one than the input. This layer makes them equal: one
    gather with clipped indices per axis crops where `x` is larger and repeats its edge where it
    is smaller, on every backend and for dynamic shapes. `"center"` alignment suits valid
    padding, whose feature maps lose their border evenly on both sides.

    Args:
        anchor: `"center"` or `"top_left"`.

    Example:
        >>> import numpy as np
        >>> x = np.arange(5, dtype="float32").reshape(1, 5, 1, 1)
        >>> fit = CropOrPadToReference()
        >>> np.asarray(fit([x, np.zeros((1, 3, 1, 1))]))[0, :, 0, 0].tolist()
        [1.0, 2.0, 3.0]
        >>> np.asarray(fit([x, np.zeros((1, 8, 1, 1))]))[0, :, 0, 0].tolist()
        [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    """

    def __init__(self, anchor: str = "center", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.anchor = check_choice(anchor, ("center", "top_left"), "anchor")

    def call(self, inputs: Any) -> Any:
        x, reference = inputs
        x_shape, ref_shape = ops.shape(x), ops.shape(reference)
        x = ops.take(x, _fit_indices(x_shape[1], ref_shape[1], self.anchor), axis=1)
        return ops.take(x, _fit_indices(x_shape[2], ref_shape[2], self.anchor), axis=2)

    def compute_output_shape(self, input_shapes: list) -> tuple:
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "anchor": self.anchor}


CUSTOM_LAYERS = (BackbonePreprocess, PadToMultiple, CropToReference, CropOrPadToReference)
