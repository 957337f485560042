"""Volume patches: standardisation, padding, the lab's sampler, augmentation and the PyDataset."""

from __future__ import annotations

import numpy as np
import pytest

from vggunet.data.volume_augment import augment_volume
from vggunet.data.volume_patches import (one_hot_volume, pad_to_shape, sample_patch,
                                         standardize_volume)
from vggunet.errors import ArgumentError, DataError


def _lab_standardize(image: np.ndarray) -> np.ndarray:
    """The lab's loop, on (H, W, D, C): per channel, per z-slice; a constant slice only centred."""
    out = np.zeros(image.shape)
    for c in range(image.shape[3]):
        for z in range(image.shape[2]):
            centred = image[:, :, z, c] - np.mean(image[:, :, z, c])
            std = np.std(centred)
            out[:, :, z, c] = centred / std if std != 0 else centred
    return out


def test_lab_standardisation_matches_the_labs_loop(rng):
    image = rng.normal(300, 50, size=(6, 5, 4, 2))
    image[:, :, 1, 0] = 7.0  # a constant slice: centred to 0, not divided
    got = standardize_volume(image, "lab")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _lab_standardize(image), atol=1e-5)
    np.testing.assert_array_equal(got[:, :, 1, 0], 0.0)
    np.testing.assert_allclose(got[:, :, 2, 1].std(), 1.0, rtol=1e-5)


def test_zscore_and_none(rng):
    image = rng.normal(5, 3, size=(4, 4, 3, 2))
    image[..., 1] = -2.0
    got = standardize_volume(image, "zscore")
    expected = (image[..., 0] - image[..., 0].mean()) / image[..., 0].std()
    np.testing.assert_allclose(got[..., 0], expected, atol=1e-5)
    np.testing.assert_array_equal(got[..., 1], 0.0)
    np.testing.assert_array_equal(standardize_volume(image, "none"), image.astype(np.float32))
    with pytest.raises(ArgumentError, match="standardize must be one of"):
        standardize_volume(image, "minmax")


def test_pad_to_shape_centres_and_crops_back(rng):
    image = rng.normal(size=(3, 8, 2, 2))
    padded, crop = pad_to_shape(image, (6, 4, 5))
    assert padded.shape == (6, 8, 5, 2)
    assert crop == (slice(1, 4), slice(0, 8), slice(1, 3))
    np.testing.assert_array_equal(padded[crop], image)
    assert padded[0].sum() == 0 and padded[4:].sum() == 0 and padded[:, :, 3:].sum() == 0
    same, crop = pad_to_shape(image, (2, 2, 2))
    assert same is image and crop == (slice(0, 3), slice(0, 8), slice(0, 2))


def _blob_volume() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((20, 20, 10), np.int32)
    label[12:18, 2:8, 3:9] = 2  # one foreground block
    image = np.arange(label.size, dtype=np.float32).reshape(label.shape + (1,))
    return image, label


def test_sample_patch_background_rule_and_seeds():
    image, label = _blob_volume()
    for seed in range(20):
        x, y = sample_patch(image, label, (6, 6, 6), np.random.default_rng(seed),
                            background_fraction=0.8)
        assert (y == 0).mean() < 0.8
        # The image patch comes from the same place as the label patch.
        corner = np.unravel_index(int(x[0, 0, 0, 0]), label.shape)
        box = tuple(slice(c, c + 6) for c in corner)
        np.testing.assert_array_equal(y, label[box])
        again = sample_patch(image, label, (6, 6, 6), np.random.default_rng(seed),
                             background_fraction=0.8)
        np.testing.assert_array_equal(again[0], x)


def test_sample_patch_gives_the_least_background_after_max_tries():
    image, label = _blob_volume()
    # Threshold 0.01 cannot be met by a 8x8x8 patch (the block is 6x6x6): the best patch seen
    # is returned; with many tries it holds the whole block (216 of 512 voxels).
    x, y = sample_patch(image, label, (8, 8, 8), np.random.default_rng(0),
                        background_fraction=0.01, max_tries=2000)
    assert (y == 2).sum() == 216
    rng = np.random.default_rng(5)
    corners = [rng.integers(0, np.array([13, 13, 3])) for _ in range(3)]
    best = min(corners, key=lambda c: (label[c[0]:c[0] + 8, c[1]:c[1] + 8,
                                             c[2]:c[2] + 8] == 0).sum())
    _, y = sample_patch(image, label, (8, 8, 8), np.random.default_rng(5),
                        background_fraction=0.01, max_tries=3)
    np.testing.assert_array_equal(y, label[best[0]:best[0] + 8, best[1]:best[1] + 8,
                                           best[2]:best[2] + 8])


def test_sample_patch_pads_small_volumes():
    image = np.ones((3, 4, 2, 2), np.float32)
    label = np.ones((3, 4, 2), np.int32)
    x, y = sample_patch(image, label, (5, 4, 4), np.random.default_rng(0))
    assert x.shape == (5, 4, 4, 2) and y.shape == (5, 4, 4)
    assert x.sum() == 3 * 4 * 2 * 2 and y.sum() == 3 * 4 * 2
    np.testing.assert_array_equal(y[1:4, :, 1:3], 1)


def test_one_hot_volume_with_and_without_background():
    label = np.array([[[0, 1], [2, 1]]])  # (1, 2, 2)
    last = one_hot_volume(label, 3)
    assert last.shape == (1, 2, 2, 2) and last.dtype == np.float32
    np.testing.assert_array_equal(last[..., 0], label == 1)
    np.testing.assert_array_equal(last[..., 1], label == 2)
    full = one_hot_volume(label, 3, include_background=True, data_format="channels_first")
    assert full.shape == (3, 1, 2, 2)
    np.testing.assert_array_equal(full.argmax(0), label)
    batch = one_hot_volume(np.stack([label, label]), 3, data_format="channels_first")
    assert batch.shape == (2, 2, 1, 2, 2)


def _coordinates(shape: tuple[int, int, int]) -> np.ndarray:
    """Each voxel's flat index: moved data can be traced back to where it came from."""
    return np.arange(np.prod(shape)).reshape(shape)


@pytest.mark.parametrize("shape", [(4, 4, 3), (4, 6, 3)])
def test_augmentation_keeps_image_and_label_aligned(shape):
    label = _coordinates(shape)
    image = np.stack([label * 2.0, label * 3.0], axis=-1)
    seen = set()
    for seed in range(40):
        x, y = augment_volume(image, label, np.random.default_rng(seed))
        assert x.shape == image.shape and y.shape == label.shape
        np.testing.assert_array_equal(x[..., 0], 2.0 * y)
        np.testing.assert_array_equal(x[..., 1], 3.0 * y)
        seen.add(y.tobytes())
        # A rigid transform: the axial neighbours of a voxel stay neighbours along z.
        np.testing.assert_array_equal(np.abs(np.diff(y, axis=2)), 1)
    # 8 flip combinations x 4 turns (square) or x 2 turns (not square), up to symmetries.
    assert len(seen) == (16 if shape[0] == shape[1] else 8)
    x, y = augment_volume(image, label, np.random.default_rng(1), flips=(False,) * 3,
                          rot90=False)
    np.testing.assert_array_equal(y, label)


def _pairs(rng, count: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for _ in range(count):
        label = np.zeros((12, 10, 8), np.int32)
        label[3:9, 2:8, 2:6] = rng.integers(1, 3, size=(6, 6, 4))
        pairs.append((rng.normal(size=(12, 10, 8, 2)).astype(np.float32), label))
    return pairs


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_dataset_batches_in_both_formats_and_label_modes(rng, data_format):
    from vggunet.data.volume_pipeline import make_volume_dataset

    pairs = _pairs(rng)
    ds = make_volume_dataset(pairs, patch=(8, 8, 4), num_classes=3, batch_size=2,
                             data_format=data_format, seed=3)
    assert len(ds) == 2
    x, y = ds[0]
    last = ds[1]
    assert last[0].shape[0] == 1
    if data_format == "channels_first":
        assert x.shape == (2, 2, 8, 8, 4) and y.shape == (2, 2, 8, 8, 4)
        # Standardised per patch and per z-slice (the lab's rule) in each channel.
        np.testing.assert_allclose(x.mean(axis=(2, 3)), 0, atol=1e-5)
    else:
        assert x.shape == (2, 8, 8, 4, 2) and y.shape == (2, 8, 8, 4, 2)
        np.testing.assert_allclose(x.mean(axis=(1, 2)), 0, atol=1e-5)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0} and y.sum(axis=1 if data_format == "channels_first"
                                                       else -1).max() <= 1
    with_bg = make_volume_dataset(pairs, patch=(8, 8, 4), num_classes=3, seed=3,
                                  data_format=data_format, include_background=True)
    _, y_bg = with_bg[0]
    axis = 1 if data_format == "channels_first" else -1
    np.testing.assert_array_equal(y_bg.sum(axis=axis), 1)
    np.testing.assert_array_equal(np.take(y_bg, [1, 2], axis=axis), y)


def test_dataset_index_labels_and_option_errors(rng):
    from vggunet.data.volume_pipeline import make_volume_dataset

    pairs = _pairs(rng)
    ds = make_volume_dataset(pairs, patch=(8, 8, 4), num_classes=3, label_mode="index",
                             data_format="channels_last", seed=0, augment=False,
                             standardize="none", shuffle=False)
    x, y = ds[0]
    assert y.shape == (2, 8, 8, 4) and y.dtype == np.int32
    # No augmentation, no standardisation: the patch is a crop of the case (found by its values).
    image, label = pairs[0]
    corner = [int(c[0]) for c in np.nonzero(image[..., 0] == x[0, 0, 0, 0, 0])]
    box = tuple(slice(c, c + p) for c, p in zip(corner, (8, 8, 4)))
    np.testing.assert_array_equal(y[0], label[box])
    with pytest.raises(ArgumentError, match="label_mode='index'.*channels_last"):
        make_volume_dataset(pairs, patch=(8, 8, 4), num_classes=3, label_mode="index")
    with pytest.raises(ArgumentError, match="patch must be three positive integers"):
        make_volume_dataset(pairs, patch=(8, 8), num_classes=3)
    pairs[1][1][0, 0, 0] = 5
    with pytest.raises(DataError, match=r"label case 1 holds values \[5\] outside \[0, 3\)"):
        make_volume_dataset(pairs, patch=(8, 8, 4), num_classes=3)


def test_dataset_is_deterministic_per_seed_and_epoch(rng):
    from vggunet.data.volume_pipeline import make_volume_dataset

    pairs = _pairs(rng, 4)

    def batches(ds):
        return [ds[i] for i in range(len(ds))]

    one = make_volume_dataset(pairs, patch=(6, 6, 4), num_classes=3, seed=7, batch_size=3,
                              patches_per_volume=2)
    two = make_volume_dataset(pairs, patch=(6, 6, 4), num_classes=3, seed=7, batch_size=3,
                              patches_per_volume=2, cache=False)
    assert len(one) == 3
    first = batches(one)
    for (xa, ya), (xb, yb) in zip(first, reversed(batches(two)[::-1])):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(one[1][0], first[1][0])  # reading again: the same batch
    one.on_epoch_end()
    assert one.epoch == 1
    assert not np.array_equal(one[0][0], first[0][0])
    other = make_volume_dataset(pairs, patch=(6, 6, 4), num_classes=3, seed=8, batch_size=3,
                                patches_per_volume=2)
    assert not np.array_equal(other[0][0], first[0][0])
    fixed = make_volume_dataset(pairs, patch=(6, 6, 4), num_classes=3, seed=7, batch_size=3,
                                patches_per_volume=2, resample=False)
    fixed.on_epoch_end()
    # Without resampling the second epoch repeats the first epoch's batches.
    for (xa, ya), (xb, yb) in zip(first, batches(fixed)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_dataset_feeds_keras_fit_and_advances_epochs(rng):
    import keras

    from vggunet.data.volume_pipeline import make_volume_dataset

    ds = make_volume_dataset(_pairs(rng, 2), patch=(4, 4, 4), num_classes=3, seed=1,
                             data_format="channels_last")
    model = keras.Sequential([keras.Input((4, 4, 4, 2)),
                              keras.layers.Conv3D(2, 1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    history = model.fit(ds, epochs=2, verbose=0)
    # Keras also calls on_epoch_end when fit starts, so the count may run ahead of the epochs.
    assert len(history.history["loss"]) == 2 and ds.epoch >= 2
