"""Tests for vggunet.augment: geometric ops move image and mask together, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from vggunet.augment import (
    Augment,
    elastic_deform,
    random_brightness_contrast,
    random_rotate,
    reflect_index,
)

SEED = tf.constant([3, 7], tf.int64)


def _coord_image(h: int, w: int) -> np.ndarray:
    """Image whose channels are the pixel's own (row, col): bilinear sampling of a
    linear function is exact, so the output tells where every pixel came from."""
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    return np.stack([ys, xs], -1)


def _labels(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 4, size=(h, w)).astype(np.int32)
    m[rng.random((h, w)) < 0.1] = 255  # ignore_index must survive too
    return m


def _assert_moved_together(out_img: np.ndarray, out_mask: np.ndarray, mask: np.ndarray):
    src_y, src_x = out_img[..., 0], out_img[..., 1]
    # Skip pixels whose source lies (numerically) on a rounding tie.
    safe = (np.abs(src_y % 1 - 0.5) > 1e-3) & (np.abs(src_x % 1 - 0.5) > 1e-3)
    assert safe.mean() > 0.95
    expected = mask[np.round(src_y).astype(int), np.round(src_x).astype(int)]
    np.testing.assert_array_equal(out_mask[safe], expected[safe])


def test_reflect_index_matches_numpy_reflect_pad():
    n = 5
    idx = reflect_index(tf.range(-12, 17), tf.constant(n)).numpy()
    ref = np.pad(np.arange(n), 12, mode="reflect")[: len(idx)]
    np.testing.assert_array_equal(idx, ref)
    assert set(reflect_index(tf.range(-3, 4), tf.constant(1)).numpy()) == {0}


def test_elastic_keeps_mask_values_in_label_set():
    mask = _labels(48, 40)
    image = np.repeat(mask[..., None].astype(np.float32), 3, -1)
    _, out = elastic_deform(image, mask, alpha=200.0, sigma=4.0, seed=SEED)
    out = out.numpy()
    assert out.dtype == np.int32 and out.shape == mask.shape
    assert set(np.unique(out)) <= set(np.unique(mask))
    assert (out != mask).mean() > 0.3  # it really moved


@pytest.mark.parametrize("sigma", [4.0, 12.0])  # 12: field built on a coarser grid
def test_elastic_moves_image_and_mask_together(sigma):
    mask = _labels(40, 56, seed=1)
    out_img, out_mask = elastic_deform(_coord_image(40, 56), mask, 40.0 * sigma, sigma, SEED)
    out_img = out_img.numpy()
    # Substantial displacement, and every source coordinate lies inside the image.
    disp = np.abs(out_img - _coord_image(40, 56)).max()
    assert disp > 2.0
    assert out_img[..., 0].min() >= 0 and out_img[..., 0].max() <= 39
    _assert_moved_together(out_img, out_mask.numpy(), mask)


def test_elastic_image_equals_mask_times_100_away_from_edges():
    mask = np.zeros((64, 64), np.int32)
    mask[16:48, 20:44] = 1
    mask[30:40, 5:15] = 2
    image = (mask * 100).astype(np.float32)[..., None]
    out_img, out_mask = elastic_deform(image, mask, 120.0, 6.0, SEED)
    out_img, out_mask = out_img.numpy()[..., 0], out_mask.numpy()
    # Where the image is not an interpolation blend it must be exactly mask * 100.
    pure = np.isin(out_img, [0.0, 100.0, 200.0])
    assert pure.mean() > 0.8
    np.testing.assert_array_equal(out_img[pure], out_mask[pure] * 100.0)


def test_elastic_alpha_zero_is_identity():
    mask = _labels(20, 24)
    image = np.random.default_rng(0).uniform(0, 255, (20, 24, 3)).astype(np.float32)
    out_img, out_mask = elastic_deform(image, mask, 0.0, 5.0, SEED)
    np.testing.assert_array_equal(np.asarray(out_img), image)
    np.testing.assert_array_equal(np.asarray(out_mask), mask)
    # A zero tensor alpha goes through the full resampling path and is exact too.
    out_img, out_mask = elastic_deform(image, mask, tf.constant(0.0), 5.0, SEED)
    np.testing.assert_array_equal(out_img.numpy(), image)
    np.testing.assert_array_equal(out_mask.numpy(), mask)


def test_elastic_same_seed_same_output_different_seed_differs():
    mask = _labels(32, 32)
    image = _coord_image(32, 32)
    a = elastic_deform(image, mask, 100.0, 4.0, [1, 2])
    b = elastic_deform(image, mask, 100.0, 4.0, [1, 2])
    c = elastic_deform(image, mask, 100.0, 4.0, [1, 3])
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_rotate_moves_image_and_mask_together():
    mask = _labels(30, 30, seed=2)
    out_img, out_mask = random_rotate(_coord_image(30, 30), mask, 20.0, SEED)
    assert not np.allclose(out_img.numpy(), _coord_image(30, 30))
    _assert_moved_together(out_img.numpy(), out_mask.numpy(), mask)


@pytest.mark.parametrize("h,w", [(24, 24), (20, 28)])
@pytest.mark.parametrize("resampling", [{"rotate_degrees": 10},
                                        {"elastic_alpha": 80, "elastic_sigma": 4}])
def test_augment_apply_geometric_alignment_and_shape(h, w, resampling):
    # One resampling op after the exact ones (flip, rot90): composing two
    # resamplings is not exactly checkable, since nearest rounding does not compose.
    aug = Augment(flip=True, rot90=True, **resampling)
    mask = _labels(h, w, seed=3)
    for s in range(6):
        out_img, out_mask = aug.apply(_coord_image(h, w), mask, [s, 11])
        # Non-square tiles keep their shape (rot90 limited to 0/180 degrees).
        assert out_img.shape[:2] == (h, w) and out_mask.shape == (h, w)
        _assert_moved_together(out_img.numpy(), out_mask.numpy(), mask)


def test_augment_apply_is_deterministic():
    aug = Augment.parse("flip,rot90,rotate=10,elastic=50:4:0.5,brightness,contrast")
    image = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    mask = _labels(16, 16)
    a = aug.apply(image, mask, [5, 5])
    b = aug.apply(image, mask, [5, 5])
    c = aug.apply(image, mask, [5, 6])
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_brightness_contrast_changes_image_only_and_clips():
    image = np.random.default_rng(1).uniform(0, 255, (16, 16, 1)).astype(np.float32)
    outs = [random_brightness_contrast(image, 0.3, 0.5, [i, 0]).numpy() for i in range(5)]
    assert all(o.min() >= 0 and o.max() <= 255 for o in outs)
    assert any(not np.allclose(o, image) for o in outs)
    mask = _labels(16, 16)
    _, out_mask = Augment(brightness=0.3, contrast=0.5).apply(image, mask, [1, 1])
    np.testing.assert_array_equal(out_mask.numpy(), mask)


def test_parse_spec():
    aug = Augment.parse("flip, rot90, rotate=12, elastic=200:8:0.25, brightness=0.05")
    assert aug == Augment(flip=True, rot90=True, rotate_degrees=12, elastic_alpha=200,
                          elastic_sigma=8, elastic_prob=0.25, brightness=0.05)
    default = Augment.parse("elastic")
    assert default.elastic_alpha > 0 and default.elastic_sigma > 0
    assert 0 < default.elastic_prob <= 1
    assert Augment.parse("") == Augment() and not Augment.parse("none").enabled
    assert Augment.from_flags(flip=True, contrast=True).contrast > 0


@pytest.mark.parametrize("spec,needle", [
    ("flip,shear", "unknown augmentation 'shear'"),
    ("rotate=abc", "bad value"),
    ("flip=1", "takes no value"),
    ("elastic=1:2:3:4", "ALPHA:SIGMA:PROB"),
    ("contrast=1.5", "contrast must be < 1"),
])
def test_parse_errors_are_clear(spec, needle):
    with pytest.raises(ValueError) as exc:
        Augment.parse(spec)
    assert needle in str(exc.value)
    if "unknown" in needle:
        assert "flip, rot90, rotate" in str(exc.value)
