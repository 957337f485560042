"""Lazy package namespaces (PEP 562): names are imported from their modules on first use.

A package's `__init__` declares `{name: module}` and gets `__getattr__`/`__dir__` from
`lazy_namespace`, so importing the package (and reading its docstring, its `__all__`, or one
keras-free submodule) costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Mapping


def lazy_namespace(
    package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for a package whose names load on first use.

    Args:
        package: the package's `__name__`.
        exports: public name -> module that defines it.
        submodules: submodule names reachable as attributes without an explicit import.

    Returns:
        `(__getattr__, __dir__)` to assign in the package's `__init__`.
    """
    namespace = importlib.import_module(package).__dict__
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif name in subs:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports, *subs})

    return __getattr__, __dir__
