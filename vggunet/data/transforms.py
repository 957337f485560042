"""Stateless TensorFlow transforms applied identically to an image and its mask.

Every random decision uses stateless random ops driven by an explicit seed (a shape-(2,)
integer tensor), so the same seed always gives the same output whatever the thread scheduling
of the ``tf.data`` pipeline. Images are float32 (H, W, C) in the raw pixel range [0, 255];
masks are int32 (H, W) class indices. Geometric transforms move both together: the image is
resampled bilinearly, the mask with nearest neighbour so that its values stay in the original
label set (``ignore_index`` included). Out-of-image source positions are mirrored back into
the image (reflect boundary), so no fill value is ever invented.

:class:`vggunet.data.augment.Augment` chooses and seeds them; the photo transforms (scale,
colour) are in :mod:`vggunet.data.photo_augment`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

__all__ = [
    "elastic_deform",
    "random_brightness_contrast",
    "random_flip",
    "random_rot90",
    "random_rotate",
    "reflect_index",
    "split_seed",
    "stateless_seed",
]


def stateless_seed(seed: tf.Tensor | Sequence[int]) -> tf.Tensor:
    """A seed as the int64 tensor the stateless ops take.

    Args:
        seed: a shape-(2,) integer tensor or pair.

    Returns:
        The seed as an int64 tensor.
    """
    return tf.cast(tf.convert_to_tensor(seed), tf.int64)


def split_seed(seed: tf.Tensor | Sequence[int], n: int) -> list[tf.Tensor]:
    """`n` independent seeds derived from one (stateless).

    Args:
        seed: a shape-(2,) integer tensor or pair.
        n: how many seeds.

    Returns:
        `n` shape-(2,) int64 seeds.
    """
    parts = tf.random.experimental.stateless_split(stateless_seed(seed), n)
    return [parts[i] for i in range(n)]


def reflect_index(coord: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Mirror coordinates into ``[0, size-1]`` (edge pixel not repeated).

    Works for integer and float coordinates and for any distance outside the
    range (the mirror is periodic), which ``tf.pad(mode="REFLECT")`` is not.

    Args:
        coord: coordinates, int32 or float32 tensor of any shape.
        size: length of the axis (scalar int tensor).

    Returns:
        Tensor like ``coord`` with every value in ``[0, size-1]``.
    """
    n = tf.cast(size, coord.dtype)
    one = tf.ones([], coord.dtype)
    period = 2 * (n - one)
    safe = tf.maximum(period, one)
    t = tf.math.floormod(coord, safe)
    t = tf.where(t > n - one, safe - t, t)
    # A length-1 axis has period 0: everything maps onto its only pixel.
    return tf.where(period > 0, t, tf.zeros_like(t))


def _resample(image: tf.Tensor, mask: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor):
    """Sample ``image`` bilinearly and ``mask`` nearest at float (ys, xs)."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    ys = reflect_index(ys, h)
    xs = reflect_index(xs, w)
    flat_img = tf.reshape(image, [h * w, -1])
    y0f, x0f = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0f)[..., None], (xs - x0f)[..., None]
    y0, x0 = tf.cast(y0f, tf.int32), tf.cast(x0f, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)

    def at(yi, xi):
        return tf.gather(flat_img, yi * w + xi)

    out = ((1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1))
           + wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1)))
    out = tf.reshape(out, [tf.shape(ys)[0], tf.shape(ys)[1], shape[2]])
    yn = tf.clip_by_value(tf.cast(tf.round(ys), tf.int32), 0, h - 1)
    xn = tf.clip_by_value(tf.cast(tf.round(xs), tf.int32), 0, w - 1)
    new_mask = tf.gather(tf.reshape(mask, [-1]), yn * w + xn)
    return out, tf.reshape(new_mask, tf.shape(ys))


def _grid(h, w):
    ys = tf.cast(tf.range(h), tf.float32)
    xs = tf.cast(tf.range(w), tf.float32)
    return tf.meshgrid(ys, xs, indexing="ij")


def _gaussian_smooth(field: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of a (H, W, K) field with reflect boundaries."""
    if sigma <= 0:
        return field
    h, w = tf.shape(field)[0], tf.shape(field)[1]
    # Truncate at 4 sigma like scipy, but never past what REFLECT padding allows.
    radius = tf.minimum(tf.constant(int(math.ceil(4 * sigma))),
                        tf.maximum(tf.minimum(h, w) - 1, 0))
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    k = field.shape[-1]
    x = tf.pad(field[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]],
               mode="REFLECT")
    # depthwise_conv2d, not conv2d with channels on the batch axis: the latter hit
    # a hard oneDNN check failure on CPU for long kernels (TF 2.21).
    kv = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, k, 1])
    kh = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, k, 1])
    x = tf.nn.depthwise_conv2d(x, kv, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, kh, [1, 1, 1, 1], "VALID")
    return x[0]


def _smooth_field(h, w, sigma: float, seed) -> tf.Tensor:
    """Gaussian-smoothed uniform(-1, 1) noise, (H, W, 2).

    For sigma >= 8 the field is built on a grid f = floor(sigma / 4) times
    coarser (noise scaled by 1/f, blur sigma/f, bilinear upsampling): a block
    average of f*f noise pixels has 1/f^2 the variance, so the result has the
    same covariance as blurring at full resolution to within the tiny extra
    smoothing of the block, at about 1/f^3 of the cost.
    """
    f = max(1, int(sigma // 4))
    if f == 1:
        noise = tf.random.stateless_uniform([h, w, 2], seed=stateless_seed(seed), minval=-1.0,
                                            maxval=1.0)
        return _gaussian_smooth(noise, sigma)
    hl, wl = (h + f - 1) // f, (w + f - 1) // f
    noise = tf.random.stateless_uniform([hl, wl, 2], seed=stateless_seed(seed), minval=-1.0,
                                        maxval=1.0) / f
    coarse = _gaussian_smooth(noise, sigma / f)
    return tf.image.resize(coarse, tf.stack([hl * f, wl * f]), "bilinear")[:h, :w]


def elastic_deform(image: tf.Tensor, mask: tf.Tensor, alpha: float, sigma: float,
                   seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Elastic deformation (Simard et al. 2003) of an image and its mask.

    A per-pixel displacement drawn from uniform(-1, 1) is smoothed with a
    Gaussian of ``sigma`` pixels and scaled by ``alpha`` (so the typical
    displacement is about ``0.16 * alpha / sigma`` px).

    Args:
        image: float32 (H, W, C).
        mask: int32 (H, W) class indices.
        alpha: displacement scale in pixels; 0 returns the inputs unchanged.
        sigma: smoothness of the field in pixels.
        seed: shape-(2,) int tensor for the stateless random field.

    Returns:
        (image, mask) deformed: image resampled bilinearly, mask with nearest
        neighbour (its values stay in the original label set).
    """
    if isinstance(alpha, (int, float)) and alpha == 0:
        return image, mask
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    field = _smooth_field(h, w, float(sigma), seed) * tf.cast(alpha, tf.float32)
    gy, gx = _grid(h, w)
    return _resample(image, mask, gy + field[..., 0], gx + field[..., 1])


def random_rotate(image: tf.Tensor, mask: tf.Tensor, max_degrees: float,
                  seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Rotate by an angle uniform in ``[-max_degrees, max_degrees]`` about the centre.

    Args:
        image: float32 (H, W, C).
        mask: int32 (H, W).
        max_degrees: largest absolute angle.
        seed: shape-(2,) int tensor.

    Returns:
        (image, mask) rotated; corners are filled by reflection.
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    angle = tf.random.stateless_uniform([], seed=stateless_seed(seed), minval=-1.0,
                                        maxval=1.0) * (max_degrees * math.pi / 180.0)
    gy, gx = _grid(h, w)
    cy = (tf.cast(h, tf.float32) - 1.0) / 2.0
    cx = (tf.cast(w, tf.float32) - 1.0) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    dy, dx = gy - cy, gx - cx
    return _resample(image, mask, cy + c * dy - s * dx, cx + s * dy + c * dx)


def random_flip(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Independent random horizontal and vertical flips of image and mask together.

    Args:
        image: (H, W, C) tensor.
        mask: (H, W) tensor.
        seed: shape-(2,) int tensor.

    Returns:
        (image, mask) flipped identically.
    """
    u = tf.random.stateless_uniform([2], seed=stateless_seed(seed))
    for flip, axis in ((u[0] < 0.5, 1), (u[1] < 0.5, 0)):
        image, mask = tf.cond(flip, lambda a=axis: (tf.reverse(image, [a]), tf.reverse(mask, [a])),
                              lambda: (image, mask))
    return image, mask


def random_rot90(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Rotate image and mask together by a random multiple of 90 degrees.

    Non-square inputs are only rotated by 0 or 180 degrees so that every
    element keeps its shape and batches stay rectangular.

    Args:
        image, mask: (H, W, C) image and (H, W) mask tensors.
        seed: shape-(2,) int tensor.

    Returns:
        (image, mask) rotated identically.
    """
    k = tf.random.stateless_uniform([], seed=stateless_seed(seed), minval=0, maxval=4,
                                    dtype=tf.int32)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    k = tf.where(tf.equal(h, w), k, 2 * (k % 2))
    image = tf.image.rot90(image, k)
    mask = tf.image.rot90(mask[..., None], k)[..., 0]
    return image, mask


def random_brightness_contrast(image: tf.Tensor, brightness: float, contrast: float,
                               seed: tf.Tensor) -> tf.Tensor:
    """Brightness and contrast jitter of a raw-range [0, 255] image (mask untouched).

    Args:
        image: float32 (H, W, C) in [0, 255].
        brightness: shift uniform in ``[-brightness, brightness] * 255``.
        contrast: factor uniform in ``[1 - contrast, 1 + contrast]`` about the image mean.
        seed: shape-(2,) int tensor.

    Returns:
        The jittered image, clipped to [0, 255].
    """
    u = tf.random.stateless_uniform([2], seed=stateless_seed(seed), minval=-1.0, maxval=1.0)
    if contrast:
        mean = tf.reduce_mean(image)
        image = (image - mean) * (1.0 + contrast * u[0]) + mean
    if brightness:
        image = image + brightness * 255.0 * u[1]
    return tf.clip_by_value(image, 0.0, 255.0)
