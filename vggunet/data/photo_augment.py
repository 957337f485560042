"""Augmentations for natural photos: random scale then crop, left-right flips, colour jitter.

The geometric op resizes image (bilinear) and mask (nearest neighbour, so its values stay
in the label set) by one random factor, then cuts a window of the crop size. Where the
scaled image is smaller than the window it is padded: the image with 0 (black in the raw
[0, 255] range), the mask with ``ignore_index``, so that padding is never trained on or
scored. A fill of 0 rather than the data mean keeps the op independent of data statistics;
since every padded pixel is ignored, the value only reaches the network's activations.

``hflip`` flips left-right only: upright photos (people, street scenes) never appear upside
down, so the vertical half of ``flip`` teaches the network views it will not see.

Colour ops act on the image only: saturation and hue run through ``tf.image`` on RGB
scaled to [0, 1] and back (3-channel images only: grey images pass unchanged). Brightness
and contrast are :func:`vggunet.data.transforms.random_brightness_contrast`.

All random draws are stateless (a shape-(2,) seed), as in :mod:`vggunet.data.transforms`.
:class:`~vggunet.data.augment.Augment` switches these on by name (``scale``,
``hflip``, ``saturation``, ``hue``, ``jitter``); :func:`parse_photo_token` is its grammar
for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import tensorflow as tf

from vggunet.checks import check_number
from vggunet.data.transforms import stateless_seed
from vggunet.errors import ArgumentError

if TYPE_CHECKING:  # pragma: no cover (augment.py imports this module)
    from vggunet.data.augment import Augment

__all__ = [
    "DEFAULT_HUE",
    "DEFAULT_SATURATION",
    "DEFAULT_SCALE",
    "PHOTO_NAMES",
    "adjust_saturation_hue",
    "check_photo_fields",
    "check_photo_options",
    "check_scale",
    "colour_step",
    "hflip_step",
    "parse_photo_token",
    "photo_fields",
    "random_saturation_hue",
    "random_scale_crop",
    "scale_step",
]

# Defaults when switched on by name only (``Augment.parse("scale,jitter")``): the usual
# range of street-scene and PASCAL training (0.5-2.0) and a hue shift of +-18 degrees.
DEFAULT_SCALE = (0.5, 2.0)
DEFAULT_SATURATION = 0.3
DEFAULT_HUE = 0.05

PHOTO_NAMES = ("scale", "hflip", "saturation", "hue", "jitter")
"""The spec names this module adds to :meth:`Augment.parse`."""


def check_scale(scale: Sequence[float], name: str = "scale") -> tuple[float, float]:
    """Check a (min, max) scale range: positive, min <= max.

    Args:
        scale: two numbers.
        name: what to call it in errors.

    Returns:
        ``(min, max)`` as floats.

    Raises:
        ArgumentError: not two positive numbers in order (names the value).

    Example:
        >>> check_scale([0.5, 2])
        (0.5, 2.0)
    """
    try:
        lo, hi = scale
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be (min, max), got {scale!r}") from None
    lo = check_number(lo, f"{name} min", low=0, low_open=True)
    hi = check_number(hi, f"{name} max", low=0, low_open=True)
    if lo > hi:
        raise ArgumentError(f"{name} must be (min, max) with min <= max, got {scale!r}")
    return float(lo), float(hi)


def check_photo_options(scale: tuple[float, float] | None, crop: Sequence[int] | None,
                        ignore_index: int | None, channels: int | None = None,
                        colour: bool = False) -> None:
    """Check that the photo augmentations fit the data they will see.

    Scaling can pad the mask when the factor can shrink the image (min < 1) or when a
    crop is given (the scaled image may still be smaller); padding needs ``ignore_index``.

    Args:
        scale: the (min, max) range, or None when off.
        crop: the training crop (H, W), or None (the image's own size).
        ignore_index: the mask's ignore label, or None.
        channels: the pipeline's output channels (None: not known).
        colour: saturation or hue jitter is on (they need 3 channels).

    Raises:
        ArgumentError: scale can pad but ``ignore_index`` is None; colour jitter with
            ``channels`` other than 3.

    Example:
        >>> check_photo_options((1.0, 2.0), None, None)  # never pads: fine
    """
    if scale is not None and ignore_index is None and (scale[0] < 1 or crop is not None):
        why = f"crop {tuple(crop)}" if crop is not None else f"min scale {scale[0]} < 1"
        raise ArgumentError(
            f"augmentation scale={scale[0]}:{scale[1]} pads the mask where the scaled image "
            f"is smaller than the crop ({why}), and padding takes the ignore label: set "
            "ignore_index (--ignore-index V, e.g. 255)")
    if colour and channels is not None and channels != 3:
        raise ArgumentError(f"saturation and hue augmentation need RGB images (channels=3), "
                            f"got channels={channels}")


def parse_photo_token(name: str, value: str) -> dict:
    """The :meth:`Augment.from_flags` keywords of one photo token of an augmentation spec.

    Grammar (as the rest of the spec: ``NAME[=VALUE]``, parts separated by ``:``):
    ``scale[=MIN:MAX]`` (or ``scale=S`` for [S, S]), ``saturation[=S]``, ``hue[=H]``,
    ``hflip`` and ``jitter`` (no value).

    Args:
        name: one of :data:`PHOTO_NAMES` (lower case).
        value: the text after ``=`` ("" when none).

    Returns:
        e.g. ``{"scale": (0.5, 2.0)}``, ``{"hue": True}`` (True = the default).

    Raises:
        ArgumentError: a malformed value (names it and what is valid).
        ValueError: a part that is not a number (the caller names the token).

    Example:
        >>> parse_photo_token("scale", "0.75:1.5")
        {'scale': (0.75, 1.5)}
    """
    if name == "jitter":
        if value:
            raise ArgumentError("jitter takes no value (it switches brightness, contrast, "
                                "saturation and hue on at their defaults; set them by name)")
        return {"jitter": True}
    if name == "hflip":
        if value:
            raise ArgumentError("hflip takes no value")
        return {"hflip": True}
    if name == "scale":
        if not value:
            return {"scale": True}
        parts = [float(p) for p in value.split(":")]
        if len(parts) > 2:
            raise ArgumentError(f"scale takes MIN:MAX, got {value!r}")
        return {"scale": check_scale((parts[0], parts[-1]))}
    return {name: float(value) if value else True}


def photo_fields(flags: dict) -> dict:
    """Take the photo flags out of parsed spec flags and turn them into `Augment` fields.

    ``jitter`` switches brightness, contrast, saturation and hue on at their defaults,
    except those the spec sets by name (in any order).

    Args:
        flags: keywords from :func:`parse_photo_token` and the rest of the spec; the photo
            ones are removed, ``brightness``/``contrast`` added for ``jitter``.

    Returns:
        ``scale``, ``hflip``, ``saturation``, ``hue`` as `Augment` fields (only those given).

    Example:
        >>> flags = {"jitter": True, "hue": 0.1}
        >>> photo_fields(flags), flags
        ({'saturation': 0.3, 'hue': 0.1}, {'brightness': True, 'contrast': True})
    """
    if flags.pop("jitter", False):
        for name in ("brightness", "contrast", "saturation", "hue"):
            flags.setdefault(name, True)
    defaults = {"scale": DEFAULT_SCALE, "hflip": True, "saturation": DEFAULT_SATURATION,
                "hue": DEFAULT_HUE}
    fields = {}
    for name, default in defaults.items():
        if name in flags:
            value = flags.pop(name)
            fields[name] = default if value is True else value
    return fields


def check_photo_fields(augment: Augment) -> None:
    """Check (and normalise) the photo fields of an `Augment` (from its ``__post_init__``).

    Args:
        augment: the `Augment`; its ``scale`` becomes a (min, max) tuple of floats.

    Raises:
        ArgumentError: bad scale, saturation outside [0, 1] or hue outside [0, 0.5].
    """
    if augment.scale is not None:
        object.__setattr__(augment, "scale", check_scale(augment.scale, "Augment.scale"))
    check_number(augment.saturation, "Augment.saturation", low=0, high=1)
    check_number(augment.hue, "Augment.hue", low=0, high=0.5)


def _photo_seed(seed, step: int) -> tf.Tensor:
    # Folded in, not split off `Augment.apply`'s split: the older ops keep their streams.
    return tf.random.experimental.stateless_fold_in(stateless_seed(seed), 1700 + step)


def scale_step(augment: Augment, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
               crop: Sequence[int] | None,
               ignore_index: int | None) -> tuple[tf.Tensor, tf.Tensor]:
    """`Augment.apply`'s scale-then-crop step (first: it sets the output size).

    Args:
        augment: the `Augment`; nothing happens when its ``scale`` is None.
        image, mask: float32 (H, W, C) and int32 (H, W).
        seed: ``apply``'s seed (this step folds its own out of it).
        crop: output (H, W), or None for the input's.
        ignore_index: mask value of padding.

    Returns:
        (image, mask).
    """
    if augment.scale is None:
        return image, mask
    return random_scale_crop(image, mask, augment.scale, crop, _photo_seed(seed, 0),
                             ignore_index)


def hflip_step(augment: Augment, image: tf.Tensor, mask: tf.Tensor,
               seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`Augment.apply`'s left-right flip (``hflip``), of image and mask together.

    Args:
        augment: the `Augment`; nothing happens when its ``hflip`` is off.
        image, mask: float32 (H, W, C) and int32 (H, W).
        seed: ``apply``'s seed.

    Returns:
        (image, mask), both flipped or neither, with probability 1/2.
    """
    if not augment.hflip:
        return image, mask
    flip = tf.random.stateless_uniform([], seed=_photo_seed(seed, 2)) < 0.5
    return tf.cond(flip, lambda: (tf.reverse(image, [1]), tf.reverse(mask, [1])),
                   lambda: (image, mask))


def colour_step(augment: Augment, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`Augment.apply`'s saturation and hue step (image only).

    Args:
        augment: the `Augment`; nothing happens when saturation and hue are 0.
        image: float32 (H, W, C) in [0, 255].
        seed: ``apply``'s seed.

    Returns:
        The image.
    """
    if not (augment.saturation or augment.hue):
        return image
    return random_saturation_hue(image, augment.saturation, augment.hue, _photo_seed(seed, 1))


def _window(n, c, u):
    """Source indices and validity of a length-``c`` window on an axis of length ``n``:
    a random offset into a longer axis, or a random placement of a shorter one."""
    slack = tf.abs(n - c)
    start = tf.minimum(tf.cast(tf.floor(u * tf.cast(slack + 1, tf.float32)), tf.int32), slack)
    idx = tf.range(c) + tf.where(n >= c, start, -start)
    valid = (idx >= 0) & (idx < n)
    return tf.clip_by_value(idx, 0, tf.maximum(n - 1, 0)), valid


def random_scale_crop(image: tf.Tensor, mask: tf.Tensor, scale: Sequence[float],
                      crop: Sequence[int] | None, seed: tf.Tensor, ignore_index: int | None,
                      image_fill: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize by a factor uniform in ``scale``, then a random window of size ``crop``.

    Args:
        image: float32 (H, W, C).
        mask: int32 (H, W) class indices.
        scale: (min, max) factor range, e.g. (0.5, 2.0).
        crop: (h, w) of the output, or None for the input's own (H, W).
        seed: shape-(2,) int tensor.
        ignore_index: mask value of padding (required when padding can happen, see
            :func:`check_photo_options`).
        image_fill: image value of padding (raw range).

    Returns:
        (image, mask) of size ``crop``: the image resized bilinearly, the mask with
        nearest neighbour, both cut by the same window; where the scaled image is smaller
        than the window it sits at a random place, padded with ``image_fill`` and
        ``ignore_index``.

    Raises:
        ArgumentError: bad ``scale``, or padding possible without ``ignore_index``.
    """
    lo, hi = check_scale(scale)
    check_photo_options((lo, hi), crop, ignore_index)
    image = tf.convert_to_tensor(image, tf.float32)
    mask = tf.convert_to_tensor(mask, tf.int32)
    u = tf.random.stateless_uniform([3], seed=stateless_seed(seed))
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    ch, cw = (h, w) if crop is None else (int(crop[0]), int(crop[1]))
    factor = lo + (hi - lo) * u[0]
    size = tf.maximum(tf.cast(tf.round(tf.cast(tf.stack([h, w]), tf.float32) * factor),
                              tf.int32), 1)
    image = tf.image.resize(image, size, "bilinear")
    mask = tf.image.resize(mask[..., None], size, "nearest")[..., 0]
    rows, row_ok = _window(size[0], ch, u[1])
    cols, col_ok = _window(size[1], cw, u[2])
    image = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
    mask = tf.gather(tf.gather(mask, rows, axis=0), cols, axis=1)
    inside = row_ok[:, None] & col_ok[None, :]
    fill = 0 if ignore_index is None else int(ignore_index)  # None: `inside` is all True
    image = tf.where(inside[..., None], image, tf.cast(image_fill, tf.float32))
    return image, tf.where(inside, mask, tf.constant(fill, tf.int32))


def adjust_saturation_hue(image: tf.Tensor, saturation_factor: float | tf.Tensor,
                          hue_delta: float | tf.Tensor) -> tf.Tensor:
    """Scale saturation and rotate hue of a raw-range RGB image (deterministic).

    Args:
        image: float32 (H, W, 3) in [0, 255].
        saturation_factor: multiplies HSV saturation (1: unchanged, 0: grey).
        hue_delta: added to the hue, in turns of the colour circle (0: unchanged).

    Returns:
        float32 (H, W, 3) in [0, 255].

    Example:
        >>> adjust_saturation_hue(tf.constant([[[200.0, 100.0, 50.0]]]), 0.0, 0.0).numpy()
        array([[[200., 200., 200.]]], dtype=float32)
    """
    unit = tf.convert_to_tensor(image, tf.float32) / 255.0
    unit = tf.image.adjust_saturation(unit, saturation_factor)
    unit = tf.image.adjust_hue(unit, hue_delta)
    return tf.clip_by_value(unit * 255.0, 0.0, 255.0)


def random_saturation_hue(image: tf.Tensor, saturation: float, hue: float,
                          seed: tf.Tensor) -> tf.Tensor:
    """Saturation factor uniform in ``[1 - saturation, 1 + saturation]``, hue shift
    uniform in ``[-hue, hue]`` turns; the mask is not involved.

    Args:
        image: float32 (H, W, C) in [0, 255]; only C = 3 is changed (grey passes as is).
        saturation: in [0, 1]; 0 = off.
        hue: in [0, 0.5]; 0 = off.
        seed: shape-(2,) int tensor.

    Returns:
        The jittered image, in [0, 255].
    """
    image = tf.convert_to_tensor(image, tf.float32)
    u = tf.random.stateless_uniform([2], seed=stateless_seed(seed), minval=-1.0, maxval=1.0)
    factor, delta = 1.0 + saturation * u[0], hue * u[1]
    if image.shape[-1] == 3:
        return adjust_saturation_hue(image, factor, delta)
    if image.shape[-1] is not None:
        return image
    # Unknown channel count (grey files stay 1 channel in the pipeline until the end).
    return tf.cond(tf.equal(tf.shape(image)[-1], 3),
                   lambda: adjust_saturation_hue(image, factor, delta), lambda: image)
