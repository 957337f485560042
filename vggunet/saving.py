"""Saving and loading vggunet models safely.

`load_model` always loads with Keras's `safe_mode=True` unless the caller explicitly asks
otherwise: a `.keras` file holding a `Lambda` layer (arbitrary Python bytecode) is refused.
Models written by vggunet contain no Lambda layers, only registered layers.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras

from vggunet.errors import ArgumentError, MissingFileError, ModelFileError, UnsafeModelError
from vggunet._serializables import register_all
from vggunet.fileio import atomic_save_model


def _lambda_layers(path: Path) -> list[str]:
    """Names of the Lambda layers in a `.keras` archive's config (empty if unreadable)."""
    import json

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return []  # not ours to diagnose here: Keras reports the damaged archive
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("class_name") in ("Lambda", "__lambda__"):
                config = node.get("config")
                found.append(str(config.get("name", "?")) if isinstance(config, dict) else "?")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def load_model(path: str | os.PathLike, *, compile: bool = True,
               safe_mode: bool = True) -> keras.Model:
    """Loads a `.keras` model with vggunet's layers, losses and metrics registered.

    Args:
        path: a `.keras` file.
        compile: restore the training configuration (loss, metrics, optimizer).
        safe_mode: keep Keras's safe mode on (the default). vggunet never turns it off by itself.

    Returns:
        The loaded model.

    Example:
        >>> import tempfile
        >>> from vggunet import build_unet, save_model
        >>> path = save_model(build_unet(input_size=(32, 32, 1), n_filters=2, n_classes=2),
        ...                   f"{tempfile.mkdtemp()}/lab.keras")
        >>> model = load_model(path)          # safe mode on, no custom_objects needed
        >>> model.name, model.output_shape
        ('unet', (None, 32, 32, 2))
    """
    register_all()  # custom layers, losses and metrics, in case Keras was imported just now
    path = Path(path)
    if path.is_dir():
        saved = " (a SavedModel export: load it with tf.saved_model.load)" if (
            path / "saved_model.pb").is_file() else ""
        raise ModelFileError(f"'{path}' is a folder, not a .keras model file{saved}.")
    if not path.is_file():
        raise MissingFileError(f"Model file not found: '{path}'.")
    if path.suffix != ".keras":
        raise ModelFileError(f"'{path}' is not a .keras model file (got suffix {path.suffix!r}).")
    if not zipfile.is_zipfile(path):
        # Keras itself would report "File not found" for a damaged archive.
        raise ModelFileError(f"'{path}' is not a valid .keras file: it is not a zip archive "
                             f"(truncated, corrupt, or another format).")
    lambdas = _lambda_layers(path) if safe_mode else []
    if lambdas:
        # Keras refuses a lambda's bytecode in safe mode, but a Lambda wrapping a *named*
        # function is resolved by name instead; refuse every Lambda before Keras sees it.
        raise UnsafeModelError(
            f"Refusing to load '{path}': it contains Lambda layer(s) {lambdas}, which run "
            f"arbitrary Python on load. vggunet models never need this. If you wrote the file "
            f"yourself and trust it, load it with keras.models.load_model and safe mode "
            f"turned off, yourself."
        )
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
        raise ModelFileError(f"cannot load model '{path}': {type(exc).__name__}: {exc}") from exc
    except (TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        # A damaged archive surfaces as KeyError (member missing), OSError (h5 signature),
        # TypeError (unknown class) ... deep inside Keras; name the file instead.
        raise ModelFileError(f"cannot load model '{path}': it is corrupt or was not written by "
                             f"Keras 3/vggunet ({type(exc).__name__}: {exc})") from exc


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves `model` to a `.keras` file atomically (temp file in the same folder, then rename).

    A crash mid-write leaves the previous file intact, never a truncated one.

    Args:
        model: the model.
        path: destination, ending in `.keras`.

    Returns:
        The destination path.

    Example:
        >>> import tempfile
        >>> from vggunet import build_unet
        >>> model = build_unet(input_size=(32, 32, 1), n_filters=2, n_classes=2)
        >>> save_model(model, f"{tempfile.mkdtemp()}/runs/lab.keras").name   # folders created
        'lab.keras'
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ArgumentError(f"model path must end in .keras, got '{path}'.")
    return atomic_save_model(model, path)
