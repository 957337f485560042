"""The model side of a resume: loading `last.keras`, checking it is the same model, and
handing trained weights back to the model the caller passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from vggunet.errors import ArgumentError
from vggunet.saving import load_model
from vggunet.training.distribute import strategy_scope

__all__ = ["copy_into", "load_for_resume", "trainable_flags"]


def _structure(model: keras.Model) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    return [(layer.name, tuple(tuple(w.shape) for w in layer.weights)) for layer in model.layers]


def _check_same_structure(model: keras.Model, loaded: keras.Model, path: Path) -> None:
    mine, theirs = _structure(model), _structure(loaded)
    if mine == theirs:
        return
    names_a = [n for n, _ in mine]
    names_b = [n for n, _ in theirs]
    if names_a != names_b:
        only_a = sorted(set(names_a) - set(names_b))[:5]
        only_b = sorted(set(names_b) - set(names_a))[:5]
        detail = (f"layers only in the given model: {only_a}; only in the checkpoint: {only_b}"
                  if only_a or only_b else "layer order differs")
    else:
        diff = next(a for a, b in zip(mine, theirs) if a != b)
        other = dict(theirs)[diff[0]]
        detail = f"layer {diff[0]!r} has weight shapes {list(diff[1])} vs {list(other)}"
    raise ArgumentError(
        f"Cannot resume from checkpoint '{path}': it holds a different model "
        f"({loaded.name!r}, {len(names_b)} layers) than the one given ({model.name!r}, "
        f"{len(names_a)} layers); {detail}. Use another out_dir or resume=False."
    )


def load_for_resume(path: Path, model: keras.Model, strategy: Any = None) -> keras.Model:
    """Loads a run's `last.keras` (compiled, optimizer state included) to continue training.

    Args:
        path: the checkpoint.
        model: the model the caller wants trained; the checkpoint must hold the same layers
            with the same weight shapes.
        strategy: a resolved strategy or None (the model is loaded in its scope).

    Returns:
        The loaded model.

    Raises:
        ArgumentError: the file does not load, or holds a different model (the message names
            the file and the first differences).
    """
    try:
        with strategy_scope(strategy):
            loaded = load_model(path, compile=True)
    except Exception as exc:  # noqa: BLE001  report which file failed
        raise ArgumentError(f"Cannot resume: failed to load checkpoint '{path}': "
                            f"{exc}") from exc
    _check_same_structure(model, loaded, Path(path))
    return loaded


def trainable_flags(model: keras.Model) -> dict[str, bool]:
    """Each layer's trainable flag.

    Args:
        model: a Keras model.

    Returns:
        Layer name -> trainable.
    """
    return {layer.name: bool(layer.trainable) for layer in model.layers}


def copy_into(target: keras.Model, source: keras.Model) -> None:
    """Gives `target` the weights and trainable flags of `source` (a no-op when they are one).

    Args:
        target: the model to update in place.
        source: a model with the same layers.
    """
    if target is source:
        return
    for layer in source.layers:
        try:
            target.get_layer(layer.name).trainable = layer.trainable
        except ValueError:
            pass
    target.set_weights(source.get_weights())
