"""Saving and loading vggunet models safely.

`load_model` always loads with Keras's `safe_mode=True` unless the caller explicitly asks
otherwise: a `.keras` file holding a `Lambda` layer (arbitrary Python bytecode) is refused.
Models written by vggunet contain no Lambda layers, only registered layers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras


class UnsafeModelError(ValueError):
    """A model file only loads with Keras safe mode off (it contains a Lambda layer or similar)."""


def load_model(path: str | os.PathLike, *, compile: bool = True, safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` model with vggunet's layers, losses and metrics registered.

    Args:
        path: a `.keras` file.
        compile: restore the training configuration (loss, metrics, optimizer).
        safe_mode: keep Keras's safe mode on (the default). vggunet never turns it off by itself.

    Returns:
        The loaded model.
    """
    import vggunet.layers  # noqa: F401  registers custom layers
    for module in ("vggunet.losses", "vggunet.metrics"):
        try:
            __import__(module)
        except ImportError:
            pass
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: '{path}'.")
    if path.suffix != ".keras":
        raise ValueError(f"'{path}' is not a .keras model file (got suffix {path.suffix!r}).")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise UnsafeModelError(
                f"Refusing to load '{path}': it contains a Lambda layer or other code that can "
                f"run arbitrary Python on load. vggunet models never need this. If you wrote "
                f"the file yourself and trust it, load it with keras.models.load_model "
                f"and safe mode turned off, yourself."
            ) from None
        raise


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves `model` to a `.keras` file atomically (temp file in the same folder, then rename).

    A crash mid-write leaves the previous file intact, never a truncated one.

    Args:
        model: the model.
        path: destination, ending in `.keras`.

    Returns:
        The destination path.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras, got '{path}'.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
