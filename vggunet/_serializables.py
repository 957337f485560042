"""Registers vggunet's Keras-serialisable classes with Keras, without importing Keras early.

Keras finds a custom class in a `.keras` file by its registered name (`"vggunet>PadToMultiple"`)
in a registry that is filled when the defining module is imported; it never imports a
third-party module by itself. A lazily imported vggunet would leave that registry empty, and
`import vggunet; keras.saving.load_model("unet.keras")` would fail. So the registering modules
are imported as soon as Keras is loaded:

* Keras already loaded when vggunet is imported: at once;
* Keras imported later by the user: right after the `keras` package has finished loading;
* Keras first imported by a vggunet module: when that (outermost) vggunet import has finished,
  since registering in the middle of it could meet half-initialised vggunet modules.

A meta-path finder watches the imports of `keras` and of `vggunet.*` (wrapping their loaders;
the modules themselves load unchanged) and removes itself once the classes are registered.

Registered names are part of vggunet's file format: never rename a registered class or change
its `package`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Sequence

PACKAGE = "vggunet"
"""The `package` of every registered class: `.keras` files store `vggunet>ClassName`."""

# The modules whose import registers classes (`@keras.saving.register_keras_serializable`).
REGISTERING_MODULES = ("vggunet.models.layers", "vggunet.models.model", "vggunet.losses",
                       "vggunet.metrics", "vggunet.training.layerwise")

_state = {"depth": 0, "done": False}


def register_all() -> None:
    """Imports every module that registers serialisable classes (Keras gets imported too)."""
    _state["done"] = True
    _remove_hook()
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


def _maybe_register() -> None:
    if not _state["done"] and _state["depth"] == 0 and "keras" in sys.modules:
        register_all()


class _WatchedLoader(importlib.abc.Loader):
    """Runs the real loader, then registers if Keras is loaded and no vggunet import is open."""

    def __init__(self, loader: importlib.abc.Loader, counts: bool) -> None:
        self._loader = loader
        self._counts = counts

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if self._counts:
            _state["depth"] += 1
        try:
            self._loader.exec_module(module)
        finally:
            if self._counts:
                _state["depth"] -= 1
        _maybe_register()

    def __getattr__(self, name: str) -> Any:  # is_package, get_resource_reader, ...
        return getattr(self._loader, name)


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Finds specs through the other finders and wraps the loaders of keras and vggunet.*."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        is_vggunet = fullname.startswith("vggunet.")
        if fullname != "keras" and not is_vggunet:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchedLoader(spec.loader, counts=is_vggunet)
                return spec
        return None


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ImportWatcher)]


def register_when_keras_loads() -> None:
    """Registers vggunet's classes now if Keras is loaded, else as soon as that is safe."""
    if "keras" in sys.modules:
        register_all()
    elif not _state["done"] and not any(isinstance(f, _ImportWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _ImportWatcher())
