"""Batches of volume patches for training: :func:`make_volume_dataset` (a Keras ``PyDataset``).

Each item is one patch of one case: sampled by the lab's rule (:func:`sample_patch`), augmented
(:func:`augment_volume`), then standardised per patch (as the lab does), and laid out in the
model's data format. Everything random depends only on ``(seed, epoch, index)``: the case order
of an epoch on ``(seed, epoch)``, each item's patch corner and augmentation on
``(seed, epoch, position in the epoch)``. So a seed reproduces every batch, in any order and with
any number of workers, and each epoch (``on_epoch_end``) draws new patches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from vggunet.checks import check_bool, check_choice, check_int, check_number
from vggunet.data.volume_augment import augment_volume
from vggunet.data.volume_cases import (VolumeCase, check_volume_pair, load_case,
                                       validate_volume_cases)
from vggunet.data.volume_io import image_volume, label_volume
from vggunet.data.volume_patches import (STANDARDIZE_METHODS, VOLUME_DATA_FORMATS,
                                         VOLUME_LABEL_MODES, check_patch, one_hot_volume,
                                         sample_patch, standardize_volume)
from vggunet.errors import ArgumentError

__all__ = ["VolumePatchDataset", "make_volume_dataset"]

Case = VolumeCase | tuple[np.ndarray, np.ndarray]


class VolumePatchDataset(keras.utils.PyDataset):
    """Batches (images, labels) of random volume patches; built by :func:`make_volume_dataset`.

    Attributes:
        epoch: the number of ``on_epoch_end`` calls so far (settable, e.g. on resume). Keras's
            ``fit`` also calls ``on_epoch_end`` once before the first epoch, so the count
            need not equal the training epoch; batches depend only on its value.
        seed: the seed every random draw derives from.
    """

    def __init__(self, cases: Sequence[Case], settings: dict, seed: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._cases = list(cases)
        self._settings = settings
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.seed = seed
        self.epoch = 0
        self._items = len(self._cases) * settings["patches_per_volume"]

    def __len__(self) -> int:
        return math.ceil(self._items / self._settings["batch_size"])

    def on_epoch_end(self) -> None:
        """Advances the epoch: the next pass draws a new order, new patches, new flips."""
        self.epoch += 1

    def cache_case(self, index: int, image: np.ndarray, label: np.ndarray) -> None:
        """Keeps a loaded case in memory (used by validation when ``cache=True``).

        Args:
            index: the case's position in the case list.
            image: its (H, W, D, C) image.
            label: its (H, W, D) labels.
        """
        self._cache[index] = (image, label)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (image, label) of a case, from the cache or read (and cached with ``cache``).

        Args:
            index: the case's position in the case list.

        Returns:
            (image (H, W, D, C) float32, label (H, W, D) int32).
        """
        if index in self._cache:
            return self._cache[index]
        case = self._cases[index]
        if isinstance(case, VolumeCase):
            pair = load_case(case)
        else:
            pair = (image_volume(np.asarray(case[0]), f"case {index}"),
                    label_volume(np.asarray(case[1]), f"case {index}"))
        if self._settings["cache"]:
            self._cache[index] = pair
        return pair

    @property
    def _draw(self) -> int:
        # Without resampling every epoch draws as the first one did.
        return self.epoch if self._settings["resample"] else 0

    def _order(self) -> np.ndarray:
        items = np.arange(self._items)
        if self._settings["shuffle"]:
            return np.random.default_rng([self.seed, self._draw]).permutation(items)
        return items

    def _item(self, item: int, position: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._settings
        image, label = self.load(item // s["patches_per_volume"])
        rng = np.random.default_rng([self.seed, self._draw, position])
        x, y = sample_patch(image, label, s["patch"], rng,
                            background_fraction=s["background_fraction"])
        if s["augment"]:
            x, y = augment_volume(x, y, rng)
        return standardize_volume(x, s["standardize"]), y

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._settings
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range (the dataset has {len(self)})")
        positions = range(index * s["batch_size"], min((index + 1) * s["batch_size"], self._items))
        order = self._order()
        pairs = [self._item(int(order[p]), p) for p in positions]
        images = np.stack([x for x, _ in pairs])
        labels = np.stack([y for _, y in pairs])
        channels_first = s["data_format"] == "channels_first"
        if channels_first:
            images = np.moveaxis(images, -1, 1)
        if s["label_mode"] == "index":
            return images, labels.astype(np.int32)
        return images, one_hot_volume(labels, s["num_classes"],
                                      include_background=s["include_background"],
                                      data_format=s["data_format"])


def _prepare(dataset: VolumePatchDataset, cases: Sequence[Case], num_classes: int,
             cache: bool) -> None:
    """Checks every case up front (each problem names its file); fills the cache on the way."""
    if not cache and all(isinstance(case, VolumeCase) for case in cases):
        validate_volume_cases(cases, num_classes)
        return
    channels = None
    for index, case in enumerate(cases):
        image, label = dataset.load(index)
        where = case.label or case.images[0] if isinstance(case, VolumeCase) else f"case {index}"
        check_volume_pair(image, label, num_classes=num_classes, channels=channels, where=where)
        channels = image.shape[-1]


def make_volume_dataset(cases: Sequence[Case], *, patch: Sequence[int], num_classes: int,
                        batch_size: int = 2, label_mode: str = "multilabel",
                        include_background: bool = False, data_format: str = "channels_first",
                        standardize: str = "lab", augment: bool = True,
                        background_fraction: float = 0.95, patches_per_volume: int = 1,
                        seed: int | None = None, shuffle: bool = True, cache: bool = True,
                        validate: bool = True, resample: bool = True,
                        workers: int = 1) -> VolumePatchDataset:
    """A Keras ``PyDataset`` of (images, labels) batches of random patches.

    Args:
        cases: :class:`VolumeCase` list, or (image (H, W, D[, C]), label (H, W, D)) array pairs.
        patch: the patch size (h, w, d); smaller volumes are zero-padded.
        num_classes: K, background included.
        batch_size: patches per batch (the last batch may be smaller).
        label_mode: ``"multilabel"``: float32 one-hot channels (1..K-1, or 0..K-1 with
            `include_background`) in `data_format`; ``"index"``: int32 (B, h, w, d) class
            indices (channels last only).
        include_background: keep the background channel of multilabel labels.
        data_format: images (B, C, h, w, d) (``"channels_first"``, the lab's) or
            (B, h, w, d, C).
        standardize: one of :data:`STANDARDIZE_METHODS`, applied per patch.
        augment: random flips and axial 90° turns.
        background_fraction: the sampler's background threshold (lab: 0.95).
        patches_per_volume: patches drawn from each case per epoch.
        seed: the seed (None: a random one, kept in ``dataset.seed``).
        shuffle: shuffle the items of each epoch.
        cache: keep loaded volumes in memory.
        validate: read and check every case first (label range, shapes, channels).
        resample: draw a new order, new patches and new flips every epoch; False: every
            epoch gives the same batches (validation patches, scored alike each epoch).
        workers: threads Keras uses to build batches (``PyDataset(workers=...)``); batches
            do not depend on it.

    Returns:
        The :class:`VolumePatchDataset`.

    Raises:
        ArgumentError: a bad option; DataError: a bad case (named).
    """
    check_choice(label_mode, VOLUME_LABEL_MODES, "label_mode")
    check_choice(data_format, VOLUME_DATA_FORMATS, "data_format")
    check_choice(standardize, STANDARDIZE_METHODS, "standardize")
    if label_mode == "index" and data_format == "channels_first":
        raise ArgumentError("label_mode='index' gives (B, h, w, d) labels for channels_last "
                            "models; use data_format='channels_last' or label_mode='multilabel'")
    if not cases:
        raise ArgumentError("make_volume_dataset needs at least one case")
    settings = {
        "patch": check_patch(patch), "num_classes": check_int(num_classes, "num_classes"),
        "batch_size": check_int(batch_size, "batch_size"), "label_mode": label_mode,
        "include_background": check_bool(include_background, "include_background"),
        "data_format": data_format, "standardize": standardize,
        "augment": check_bool(augment, "augment"),
        "background_fraction": check_number(background_fraction, "background_fraction", low=0,
                                            high=1, low_open=True),
        "patches_per_volume": check_int(patches_per_volume, "patches_per_volume"),
        "shuffle": check_bool(shuffle, "shuffle"), "cache": check_bool(cache, "cache"),
        "resample": check_bool(resample, "resample"),
    }
    check_int(seed, "seed", minimum=0, allow_none=True)
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else int(seed)
    dataset = VolumePatchDataset(cases, settings, seed, workers=check_int(workers, "workers"))
    if check_bool(validate, "validate"):
        _prepare(dataset, cases, settings["num_classes"], settings["cache"])
    return dataset
