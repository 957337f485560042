"""Checks a run makes before it trains: what would otherwise fail deep inside Keras (data of
another type, shape or class count than the model takes) or only after a phase has trained
(an unfreeze spec of phase 2 that matches no layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import keras
import numpy as np

from vggunet.errors import ArgumentError
from vggunet.evaluate import check_data_fits_model
from vggunet.training.settings import CompileSettings

if TYPE_CHECKING:
    from vggunet.training.loop import Phase

__all__ = ["check_before_training", "check_data_type"]


def check_data_type(data: Any, what: str) -> None:
    """Refuses training data that `fit` cannot read, naming what it got.

    `fit` takes a `tf.data.Dataset`, a `keras.utils.PyDataset`, a generator or iterator, or
    `(images, masks[, weights])` arrays; a list of plain values is none of these.

    Args:
        data: the data.
        what: its name in the message, e.g. `"train_data"`.

    Raises:
        ArgumentError: a tuple or list that is not 2 or 3 arrays, or a string/number.

    Example:
        >>> check_data_type([1, 2, 3], "train_data")
        Traceback (most recent call last):
        ...
        vggunet.errors.ArgumentError: train_data must be a tf.data.Dataset, a
        keras.utils.PyDataset, a generator, or (images, masks[, weights]) arrays; got a list
        of 3 int(s).
    """
    expected = ("must be a tf.data.Dataset, a keras.utils.PyDataset, a generator, or (images, "
                "masks[, weights]) arrays")
    if isinstance(data, (str, bytes, int, float, np.number)):
        raise ArgumentError(f"{what} {expected}; got {type(data).__name__} {data!r}.")
    if isinstance(data, (tuple, list)):
        arrays = len(data) in (2, 3) and all(hasattr(part, "shape") for part in data)
        if not arrays:
            kinds = sorted({type(part).__name__ for part in data})
            raise ArgumentError(f"{what} {expected}; got a {type(data).__name__} of "
                                f"{len(data)} {'/'.join(kinds) or 'item'}(s).")


def check_before_training(model: keras.Model, train_data: Any, val_data: Any,
                          phases: Sequence[Phase], compile: CompileSettings) -> None:
    """Runs every check before the first phase trains.

    Args:
        model: the model, built.
        train_data, val_data: what `fit` will get (`val_data` may be None).
        phases: the run's phases (their `check`s run when they have epochs).
        compile: the compile settings (their `num_classes` against the model's outputs).

    Raises:
        ArgumentError: the first problem found, named.
    """
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if data is not None:
            check_data_type(data, name)
            check_data_fits_model(model, data, num_classes=compile.num_classes, what=name)
    for phase in phases:
        if phase.check is not None and phase.settings.epochs > 0:
            phase.check(model)
