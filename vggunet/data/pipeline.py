"""tf.data pipelines of (images, masks[, weights]) batches: :func:`make_dataset` and its steps.

Conventions shared with the rest of vggunet:

* Images leave the pipeline as float32 (B, H, W, C) in the RAW pixel range
  [0, 255] (``scale="unit"`` divides by 255). Grey images are repeated to 3
  channels when ``channels=3``; RGB is converted to grey with ITU-R 601
  luminance when ``channels=1``; alpha is dropped. Any other ``channels`` C reads
  files with exactly C channels (``.npy`` arrays (H, W, C), values as stored;
  LA images for 2, RGBA/RGBX for 4) and refuses the others, naming them.
* 16-bit greyscale images are accepted and scaled to the 8-bit range
  (value / 257, so 65535 -> 255.0, kept as float); 16-bit masks are read as
  integer class indices unchanged.
* Masks leave as int32 class indices (B, H, W); ``ignore_index`` passes through.
* Every problem with a file raises :class:`~vggunet.errors.DataError` naming the file. Files
  are checked in Python (PIL, with a full decode) before any tf.data graph is built,
  so a bad file never surfaces as a TensorFlow traceback.

Decoding inside tf.data goes through PIL in ``tf.numpy_function`` (the one decoding path of
:mod:`vggunet.data.images`, so the pixels equal :func:`load_image`'s and :func:`load_mask`'s);
augmentation runs as TensorFlow ops with stateless seeds (see :mod:`vggunet.data.augment`).
TensorFlow is imported when a pipeline is built, not when this module is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggunet import choices
from vggunet.checks import check_choice, check_int, check_number
from vggunet.data.images import check_channels, decode_image
from vggunet.data.masks import MaskDecoder, PaletteSpec, mask_decoder
from vggunet.data.pairs import Pair, find_pairs
from vggunet.data.validate import (
    check_at_least_one, check_same_size, class_weights, validate_pairs,
)
from vggunet.data.weightmaps import border_weight_map
from vggunet.errors import ArgumentError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from vggunet.data.augment import Augment

__all__ = ["SAMPLE_WEIGHTS", "SCALES", "make_dataset"]

SCALES = ("raw", "unit")
"""Output pixel ranges: ``"raw"`` [0, 255], ``"unit"`` [0, 1]."""

SAMPLE_WEIGHTS = choices.SAMPLE_WEIGHTS
"""Per-pixel weight maps `make_dataset` can add (besides None)."""


@dataclass(frozen=True)
class _Plan:
    """What every element goes through, checked once before any file is read."""

    read_mask: MaskDecoder
    mask_format: str
    palette: Any
    mask_channel: int
    num_classes: int
    ignore_index: int | None
    channels: int
    scale: str
    size: tuple[int, int] | None
    crop: tuple[int, int] | None
    flip: bool
    pad_to: int | None
    augment: Augment | None
    sample_weights: str | None
    border_w0: float
    border_sigma: float
    max_weight: float | None

    @property
    def fill(self) -> int:
        """The mask value of padding."""
        return 0 if self.ignore_index is None else int(self.ignore_index)

    @property
    def out_hw(self) -> list:
        """The static (H, W) of the output elements ([None, None] when it varies)."""
        hw = self.crop or self.size
        if hw is None:
            return [None, None]
        if self.pad_to:
            hw = tuple(int(math.ceil(v / self.pad_to) * self.pad_to) for v in hw)
        return list(hw)


def _as_hw(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if hasattr(value, "__index__"):
        value = (value, value)
    try:
        hw = tuple(check_int(v, name) for v in value)
    except (TypeError, ArgumentError):
        hw = ()
    if len(hw) != 2:
        raise ArgumentError(f"{name} must be (H, W) with positive ints, got {value!r}")
    return hw


def _as_augment(augment) -> Augment | None:
    from vggunet.data.augment import Augment

    if isinstance(augment, str):
        augment = Augment.parse(augment)
    if augment is not None and not isinstance(augment, Augment):
        raise ArgumentError(f"augment must be an Augment, its string spec (e.g. 'flip,rot90') "
                            f"or None, got {augment!r}")
    return augment if augment is not None and augment.enabled else None


def _checked_plan(*, num_classes, mask_format, palette, mask_channel, ignore_index, channels,
                  scale, size, crop, flip, pad_to, augment, sample_weights, border_w0,
                  border_sigma, max_weight) -> _Plan:
    sample_weights = check_choice(sample_weights, (None, *SAMPLE_WEIGHTS), "sample_weights")
    max_weight = check_number(max_weight, "max_weight", low=0, low_open=True, allow_none=True)
    if max_weight is not None and sample_weights is None:
        raise ArgumentError(f"max_weight={max_weight:g} caps the class weights of "
                            f"sample_weights; give sample_weights too (e.g. "
                            f"'median_frequency').")
    if sample_weights == "border":
        border_w0 = check_number(border_w0, "border_w0", low=0)
        border_sigma = check_number(border_sigma, "border_sigma", low=0, low_open=True)
    plan = _Plan(
        read_mask=mask_decoder(mask_format, palette, mask_channel), mask_format=mask_format,
        palette=palette, mask_channel=mask_channel,
        num_classes=check_at_least_one(num_classes, "num_classes"),
        ignore_index=check_int(ignore_index, "ignore_index", minimum=None, allow_none=True),
        channels=check_channels(channels), scale=check_choice(scale, SCALES, "scale"),
        size=_as_hw(size, "size"), crop=_as_hw(crop, "crop"), flip=bool(flip),
        pad_to=check_int(pad_to, "pad_to", allow_none=True), augment=_as_augment(augment),
        sample_weights=sample_weights, border_w0=border_w0, border_sigma=border_sigma,
        max_weight=max_weight)
    if plan.augment is not None:
        from vggunet.data.photo_augment import check_photo_options

        check_photo_options(plan.augment.scale, plan.crop, plan.ignore_index, plan.channels,
                            colour=bool(plan.augment.saturation or plan.augment.hue))
    return plan


def _resolve_pairs(image_dir, mask_dir, pairs, mask_suffix) -> list[Pair]:
    if pairs is None:
        if image_dir is None or mask_dir is None:
            raise ArgumentError("give image_dir and mask_dir, or pairs=")
        pairs = find_pairs(image_dir, mask_dir, mask_suffix)
    pairs = [(Path(a), Path(b)) for a, b in pairs]
    if not pairs:
        raise DataError("no (image, mask) pairs: the data set is empty")
    return pairs


def _check_data(pairs: list[Pair], plan: _Plan, validate: bool, batch_size: int
                ) -> np.ndarray | None:
    """Validates the pairs when asked (or when weights need their statistics).

    Returns the per-class weights of `plan.sample_weights`, or None.
    """
    if not validate and plan.sample_weights is None:
        return None
    info = validate_pairs(pairs, plan.num_classes, plan.mask_format, plan.palette,
                          plan.mask_channel, plan.ignore_index, channels=plan.channels)
    if (len(info.image_sizes) > 1 and plan.size is None and plan.crop is None
            and batch_size > 1):
        (s1, p1), (s2, p2) = list(info.size_examples.items())[:2]
        raise DataError(f"images have different sizes ({p1} is {s1[0]}x{s1[1]}, {p2} is "
                        f"{s2[0]}x{s2[1]}, {len(info.image_sizes)} sizes in all) and "
                        "cannot be batched; pass size= or crop=, or batch_size=1 (CLI: --size "
                        "HxW, --crop HxW or --batch-size 1)")
    if plan.sample_weights is None:
        return None
    # Border weights use median-frequency class weights as their w_c term.
    method = "median_frequency" if plan.sample_weights == "border" else plan.sample_weights
    return class_weights(info, plan.num_classes, method, max_weight=plan.max_weight)


def _decoder(tf, plan: _Plan, pairs: list[Pair]) -> Callable:
    """index -> (image, mask, index): PIL decoding in numpy_function, then the resize."""
    def decode(i):
        image_path, mask_path = pairs[int(i)]
        # keep_grey: grey stays 1 channel until the end (repeated there): cheaper.
        image = decode_image(image_path, plan.channels, keep_grey=True)
        mask = plan.read_mask(mask_path)
        check_same_size(image, image_path, mask, mask_path)
        return image, mask

    def tf_decode(i):
        image, mask = tf.numpy_function(decode, [i], [tf.float32, tf.int32], stateful=False)
        image.set_shape([None, None, None])
        mask.set_shape([None, None])
        if plan.size is not None:
            image = tf.image.resize(image, plan.size, "bilinear")
            mask = tf.image.resize(mask[..., None], plan.size, "nearest")[..., 0]
        return image, mask, i

    return tf_decode


def _augmented(tf, plan: _Plan, image, mask, seeds):
    """Random crop, flips and augmentation, each from its own stateless seed.

    With the ``scale`` augmentation the crop is its window (padded with ``ignore_index``)."""
    from vggunet.data.transforms import random_flip

    scaled = plan.augment is not None and plan.augment.scale is not None
    if plan.crop is not None and not scaled:
        image, mask = _random_crop(tf, image, mask, plan.crop, seeds[0])
    if plan.flip:
        image, mask = random_flip(image, mask, seeds[1])
    if plan.augment is not None:
        image, mask = plan.augment.apply(image, mask, seeds[2], crop=plan.crop,
                                         ignore_index=plan.ignore_index)
    return image, mask


def _pixel_weights(tf, plan: _Plan, cw: np.ndarray | None, mask):
    """float32 (H, W) weights of `plan.sample_weights` for one mask, or None."""
    if plan.sample_weights == "border":
        weights = tf.numpy_function(
            lambda m: border_weight_map(m, plan.border_w0, plan.border_sigma, cw,
                                        plan.ignore_index),
            [mask], tf.float32, stateful=False)
        weights.set_shape([None, None])
        return weights
    if cw is None:
        return None
    valid = (mask >= 0) & (mask < plan.num_classes)
    return tf.where(valid, tf.gather(tf.constant(cw), tf.clip_by_value(
        mask, 0, plan.num_classes - 1)), 0.0)


def _transformer(tf, plan: _Plan, cw: np.ndarray | None) -> Callable:
    """(image, mask, index, key) -> the output element: augment, weights, pad, channels."""
    out_hw = plan.out_hw

    def transform(image, mask, index, key):
        seeds = tf.random.experimental.stateless_split(tf.stack([key, index]), 3)
        image, mask = _augmented(tf, plan, image, mask, seeds)
        weights = _pixel_weights(tf, plan, cw, mask)
        if plan.pad_to is not None:
            image, mask, weights = _pad_to_multiple(tf, image, mask, weights, plan.pad_to,
                                                    plan.fill)
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        image = tf.broadcast_to(image, [h, w, plan.channels])
        if plan.scale == "unit":
            image = image / 255.0
        image.set_shape([*out_hw, plan.channels])
        mask.set_shape(out_hw)
        if weights is None:
            return image, mask
        weights.set_shape(out_hw)
        return image, mask, weights

    return transform


def _assemble(tf, n: int, tf_decode: Callable, transform: Callable, *, batch_size: int,
              shuffle: bool, seed: int | None, repeat: bool, cache: bool):
    autotune = tf.data.AUTOTUNE
    indices = tf.data.Dataset.range(n)
    # One random key per element per epoch: `rerandomize_each_iteration` gives a new
    # deterministic stream for every pass over the data (and every repeat).
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if cache:
        ds = indices.map(tf_decode, num_parallel_calls=autotune, deterministic=True).cache()
        ds = tf.data.Dataset.zip(ds, keys).map(lambda e, k: (*e, k))
    else:
        ds = tf.data.Dataset.zip(indices, keys)
    if shuffle:
        # Without a cache this shuffles file indices, not decoded images: the buffer stays tiny.
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if not cache:
        ds = ds.map(lambda i, k: (*tf_decode(i), k), num_parallel_calls=autotune,
                    deterministic=True)
    ds = ds.map(transform, num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(batch_size, num_parallel_calls=autotune, deterministic=True)
    return ds.prefetch(autotune)


def make_dataset(image_dir: str | Path | None = None, mask_dir: str | Path | None = None, *,
                 pairs: Sequence[Pair] | None = None, num_classes: int,
                 mask_format: str = "index", palette: PaletteSpec | None = None,
                 mask_channel: int = 0, ignore_index: int | None = None,
                 mask_suffix: str | None = None,
                 channels: int = 3, scale: str = "raw",
                 size: tuple[int, int] | None = None, crop: tuple[int, int] | None = None,
                 flip: bool = False, pad_to: int | None = None,
                 augment: Augment | str | None = None, batch_size: int = 8,
                 shuffle: bool = True, seed: int | None = None, repeat: bool = False,
                 cache: bool = False, validate: bool = True,
                 sample_weights: str | None = None, border_w0: float = 10.0,
                 border_sigma: float = 5.0, max_weight: float | None = None
                 ) -> tf.data.Dataset:
    """Build a ``tf.data`` pipeline of (images, masks[, weights]) batches.

    Per element: decode (PIL) -> resize ``size`` -> random ``crop`` -> ``flip``
    -> ``augment`` -> ``pad_to`` -> channels/scale. All random ops are
    stateless, seeded from (a per-epoch key drawn from ``seed``, element index),
    so two datasets built with the same arguments and seed yield identical
    batches, while successive epochs still differ.

    Args:
        image_dir, mask_dir: folders paired with :func:`find_pairs` (or give ``pairs``).
        pairs: explicit (image_path, mask_path) list.
        num_classes: number of classes.
        mask_format, palette, mask_channel, ignore_index: see :func:`load_mask`.
        mask_suffix: see :func:`find_pairs`.
        channels: output channels: 1 (grey) or 3 (RGB), converted into each other, or
            any other count the files have (``.npy`` (H, W, C) arrays, LA = 2, RGBA = 4).
        scale: ``"raw"`` ([0, 255]) or ``"unit"`` ([0, 1]).
        size: (H, W) resize (bilinear image, nearest mask).
        crop: (H, W) random crop, identical for image and mask; smaller inputs
            are reflect-padded (with the ``scale`` augmentation: the window cut from the
            scaled image, padded with 0 and ``ignore_index``).
        flip: random horizontal and vertical flips.
        pad_to: pad H and W (bottom/right) up to a multiple of this; image by
            reflection, mask with ignore_index (or 0), weights with 0.
        augment: an :class:`~vggunet.augment.Augment` or its string spec (e.g.
            ``"flip,scale=0.5:2,jitter"``; ``scale`` needs ``ignore_index`` when it can pad).
        batch_size: batch size (last batch may be smaller).
        shuffle: shuffle the files each epoch.
        seed: makes the pipeline deterministic.
        repeat: repeat forever.
        cache: keep decoded (and resized) samples in memory after the first epoch.
        validate: run :func:`validate_pairs` first (recommended).
        sample_weights: None, ``"median_frequency"``, ``"inverse_frequency"``,
            ``"inverse_sqrt_frequency"``
            (per-pixel class weights) or ``"border"`` (U-Net separation weights
            with median-frequency ``w_c``); adds float32 (B, H, W) weights.
        border_w0, border_sigma: parameters of the border weights.
        max_weight: cap of the class weights of ``sample_weights`` (> 0), or None.

    Returns:
        ``tf.data.Dataset`` of (float32 (B, H, W, C), int32 (B, H, W)) or
        (images, masks, float32 weights (B, H, W)).

    Raises:
        DataError: pairing or validation problem (names the file).
        ArgumentError: invalid argument (checked before any file is read).
    """
    import tensorflow as tf  # deferred: pairing and checking data must not pay TF import cost

    batch_size = check_at_least_one(batch_size, "batch_size")
    plan = _checked_plan(
        num_classes=num_classes, mask_format=mask_format, palette=palette,
        mask_channel=mask_channel, ignore_index=ignore_index, channels=channels, scale=scale,
        size=size, crop=crop, flip=flip, pad_to=pad_to, augment=augment,
        sample_weights=sample_weights, border_w0=border_w0, border_sigma=border_sigma,
        max_weight=max_weight)
    pairs = _resolve_pairs(image_dir, mask_dir, pairs, mask_suffix)
    cw = _check_data(pairs, plan, validate, batch_size)
    return _assemble(tf, len(pairs), _decoder(tf, plan, pairs), _transformer(tf, plan, cw),
                     batch_size=batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
                     cache=cache)


def _random_crop(tf, image, mask, crop, seed):
    """Random (H, W) window; smaller inputs are placed randomly and reflect-padded."""
    from vggunet.data.transforms import reflect_index

    shape = tf.shape(image)
    u = tf.random.stateless_uniform([2], seed=seed)

    def axis_index(n, c, r):
        slack = tf.abs(n - c)
        start = tf.cast(tf.floor(r * tf.cast(slack + 1, tf.float32)), tf.int32)
        start = tf.minimum(start, slack)
        start = tf.where(n >= c, start, -start)
        return reflect_index(start + tf.range(c), n)

    rows = axis_index(shape[0], crop[0], u[0])
    cols = axis_index(shape[1], crop[1], u[1])
    image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
    mask = tf.gather(tf.gather(mask, rows, axis=0), cols, axis=1)
    return image, mask


def _pad_to_multiple(tf, image, mask, weights, k: int, fill: int):
    """Pads H and W up to multiples of k: the image by reflection, mask and weights by value."""
    from vggunet.data.transforms import reflect_index

    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    th = (h + k - 1) // k * k
    tw = (w + k - 1) // k * k
    rows = reflect_index(tf.range(th), h)
    cols = reflect_index(tf.range(tw), w)
    image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
    mask = tf.pad(mask, [[0, th - h], [0, tw - w]], constant_values=fill)
    if weights is not None:
        weights = tf.pad(weights, [[0, th - h], [0, tw - w]])
    return image, mask, weights
