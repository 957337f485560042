"""Tests for vggunet.data.photo_augment: scale-then-crop keeps image and mask aligned and pads
with 0 / the ignore label; saturation and hue jitter touch the image only; the spec grammar."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vggunet.data.augment import Augment
from vggunet.data.photo_augment import (
    adjust_saturation_hue, random_saturation_hue, random_scale_crop,
)
from vggunet.errors import ArgumentError

SEED = tf.constant([5, 11], tf.int64)
IGNORE = -1  # not a pixel id below


def _coord_pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Image whose channels are each pixel's own (row, col, 0), mask = the pixel's id
    row * w + col: bilinear resampling of a linear function is exact, so the image says
    where each output pixel was sampled and the mask which source pixel it took."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    image = np.stack([ys, xs, np.zeros_like(ys)], -1)
    mask = (ys * w + xs).astype(np.int32)
    return image, mask


def _assert_aligned(image: np.ndarray, mask: np.ndarray, w: int) -> None:
    """The mask's source pixel is the nearest pixel to the image's sample position."""
    inside = mask != IGNORE
    my, mx = np.divmod(mask[inside], w)
    assert np.abs(my - image[..., 0][inside]).max() <= 0.5 + 1e-3
    assert np.abs(mx - image[..., 1][inside]).max() <= 0.5 + 1e-3


def test_half_scale_pads_mask_with_ignore_and_image_with_zero():
    image, mask = _coord_pair(40, 50)
    out_img, out_mask = random_scale_crop(image, mask, (0.5, 0.5), None, SEED, IGNORE)
    out_img, out_mask = out_img.numpy(), out_mask.numpy()
    assert out_img.shape == (40, 50, 3) and out_mask.shape == (40, 50)
    inside = out_mask != IGNORE
    rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
    # The 20x25 scaled image is one block somewhere in the 40x50 window; the rest is padding.
    assert inside.sum() == 20 * 25 and len(rows) == 20 and len(cols) == 25
    assert inside[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    np.testing.assert_array_equal(out_img[~inside], 0.0)
    # Halving with pixel centres: output pixel i samples source position 2i + 0.5.
    block = out_img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    np.testing.assert_allclose(block[..., 0], np.repeat((2 * np.arange(20) + 0.5)[:, None], 25, 1),
                               atol=1e-4)
    np.testing.assert_allclose(block[..., 1], np.repeat((2 * np.arange(25) + 0.5)[None], 20, 0),
                               atol=1e-4)
    _assert_aligned(out_img, out_mask, 50)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upscale_then_crop_keeps_image_and_mask_aligned(seed):
    image, mask = _coord_pair(30, 36)
    out_img, out_mask = random_scale_crop(image, mask, (1.2, 2.0), (24, 20),
                                          tf.constant([seed, 3]), IGNORE)
    out_img, out_mask = out_img.numpy(), out_mask.numpy()
    assert out_img.shape == (24, 20, 3) and (out_mask != IGNORE).all()  # nothing to pad
    # Upscaled: neighbouring output pixels sample less than one source pixel apart.
    steps = np.diff(out_img[:, 0, 0])
    assert np.all(steps > 0) and np.all(steps < 1)
    _assert_aligned(out_img, out_mask, 36)


def test_scale_crop_is_deterministic_for_a_seed_and_varies_with_it():
    image, mask = _coord_pair(32, 32)
    runs = [random_scale_crop(image, mask, (0.5, 2.0), (32, 32), tf.constant([s, 1]), IGNORE)
            for s in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0][0].numpy(), runs[1][0].numpy())
    np.testing.assert_array_equal(runs[0][1].numpy(), runs[1][1].numpy())
    assert not np.array_equal(runs[0][0].numpy(), runs[2][0].numpy())


def test_scale_that_can_pad_needs_ignore_index():
    image, mask = _coord_pair(8, 8)
    with pytest.raises(ArgumentError, match="ignore_index"):
        random_scale_crop(image, mask, (0.5, 1.0), None, SEED, None)
    with pytest.raises(ArgumentError, match=r"crop \(8, 8\).*ignore_index"):
        Augment(scale=(1.0, 2.0)).apply(image, mask, SEED, crop=(8, 8))
    # Never smaller than the window: no padding, no ignore label needed.
    out_img, _ = random_scale_crop(image, mask, (1.0, 2.0), None, SEED, None)
    assert out_img.shape == (8, 8, 3)


def test_saturation_one_and_hue_zero_are_identities_and_hand_values():
    image = np.random.default_rng(0).uniform(0, 255, (6, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(adjust_saturation_hue(image, 1.0, 0.0).numpy(), image, atol=0.05)
    # Saturation 0 keeps HSV value = max(r, g, b); hue +1/3 turn maps red to green, +1/2 to cyan.
    px = tf.constant([[[200.0, 100.0, 50.0], [255.0, 0.0, 0.0]]])
    np.testing.assert_allclose(adjust_saturation_hue(px, 0.0, 0.0).numpy()[0, 0], [200] * 3,
                               atol=0.05)
    np.testing.assert_allclose(adjust_saturation_hue(px, 1.0, 1 / 3).numpy()[0, 1],
                               [0, 255, 0], atol=0.05)
    np.testing.assert_allclose(adjust_saturation_hue(px, 1.0, 0.5).numpy()[0, 1],
                               [0, 255, 255], atol=0.05)


def test_jitter_changes_only_the_image_and_keeps_the_range():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    image[:4] = 255.0  # saturated pixels must stay in range after every op
    image[4:8] = 0.0
    mask = rng.integers(0, 5, (16, 16)).astype(np.int32)
    aug = Augment.parse("jitter")
    out_img, out_mask = aug.apply(image, mask, SEED)
    out_img = out_img.numpy()
    np.testing.assert_array_equal(out_mask.numpy(), mask)
    assert out_img.min() >= 0 and out_img.max() <= 255
    assert np.abs(out_img - image).max() > 1
    again, _ = aug.apply(image, mask, SEED)
    np.testing.assert_array_equal(again.numpy(), out_img)
    # Saturation and hue leave a grey (1-channel) image as it is, also when C is not static.
    grey = image[..., :1]
    np.testing.assert_array_equal(random_saturation_hue(grey, 0.5, 0.2, SEED).numpy(), grey)
    unknown = tf.function(lambda x: random_saturation_hue(x, 0.5, 0.2, SEED),
                          input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    np.testing.assert_array_equal(unknown(grey).numpy(), grey)
    assert np.abs(unknown(image).numpy() - image).max() > 1


@pytest.mark.parametrize("spec, expected", [
    ("scale", Augment(scale=(0.5, 2.0))),
    ("flip,scale=0.75:1.5,saturation=0.2", Augment(flip=True, scale=(0.75, 1.5), saturation=0.2)),
    ("scale=1.25", Augment(scale=(1.25, 1.25))),
    ("hflip,scale", Augment(hflip=True, scale=(0.5, 2.0))),
    ("hue=0.1,jitter", Augment(brightness=0.1, contrast=0.2, saturation=0.3, hue=0.1)),
])
def test_spec_grammar(spec, expected):
    assert Augment.parse(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("scale=2:1", r"'scale=2:1'.*min <= max.*\(2.0, 1.0\)"),
    ("scale=0", r"'scale=0'.*> 0, got 0"),
    ("scale=1:2:3", r"MIN:MAX, got '1:2:3'"),
    ("saturation=abc", r"'saturation=abc'.*'abc'"),
    ("saturation=1.5", r"Augment.saturation.*\[0, 1\], got 1.5"),
    ("hue=0.7", r"Augment.hue.*\[0, 0.5\], got 0.7"),
    ("jitter=0.4", r"'jitter=0.4'.*no value"),
    ("hflip=1", r"'hflip=1'.*hflip takes no value"),
    ("sacle", r"'sacle'.*scale\[=MIN:MAX\].*Did you mean 'scale'"),
])
def test_spec_errors_name_the_bad_value(spec, message):
    with pytest.raises(ArgumentError, match=message):
        Augment.parse(spec)


def _write_pair(root, h: int, w: int) -> list:
    image = np.random.default_rng(2).integers(1, 255, (h, w, 3)).astype(np.uint8)
    mask = np.full((h, w), 2, np.uint8)
    Image.fromarray(image).save(root / "a.png")
    Image.fromarray(mask).save(root / "a_mask.png")
    return [(root / "a.png", root / "a_mask.png")]


def test_make_dataset_scales_into_the_crop_and_pads_with_ignore(tmp_path):
    from vggunet.data import make_dataset

    pairs = _write_pair(tmp_path, 20, 24)
    ds = make_dataset(pairs=pairs, num_classes=3, ignore_index=255, crop=(32, 32),
                      augment="scale=0.5:0.5", batch_size=1, seed=3, shuffle=False)
    images, masks = next(iter(ds))
    images, masks = images.numpy()[0], masks.numpy()[0]
    assert images.shape == (32, 32, 3) and masks.shape == (32, 32)
    # The 10x12 scaled pair sits in the 32x32 window; everything else is padding.
    assert (masks == 2).sum() == 10 * 12 and (masks == 255).sum() == 32 * 32 - 10 * 12
    np.testing.assert_array_equal(images[masks == 255], 0.0)
    assert (images[masks == 2] > 0).all()
    with pytest.raises(ArgumentError, match="ignore_index"):
        make_dataset(pairs=pairs, num_classes=3, crop=(32, 32), augment="scale")
    with pytest.raises(ArgumentError, match="channels=1"):
        make_dataset(pairs=pairs, num_classes=3, channels=1, augment="jitter")


def test_hflip_mirrors_image_and_mask_left_right_only():
    image, mask = _coord_pair(4, 6)
    seen = set()
    for i in range(16):
        out_image, out_mask = Augment(hflip=True).apply(image, mask, tf.constant([i, 3]))
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        flipped = bool(out_mask[0, 0] != 0)
        source_image = image[:, ::-1] if flipped else image
        source_mask = mask[:, ::-1] if flipped else mask
        np.testing.assert_array_equal(out_image, source_image)
        np.testing.assert_array_equal(out_mask, source_mask)  # rows never move
        seen.add(flipped)
        again = Augment(hflip=True).apply(image, mask, tf.constant([i, 3]))[1].numpy()
        np.testing.assert_array_equal(again, out_mask)  # seeded
    assert seen == {True, False}
