"""The package's import map: which top-level part of vggunet may import which.

docs/ARCHITECTURE.md describes this map; an import outside it fails here, so the document
and the code change together. Imports inside functions count too (they are edges all the
same, only deferred)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vggunet"
SHARED = {"_lazy", "_serializables", "errors", "checks", "choices", "fileio", "console"}
# Old module paths kept as aliases of their new homes (files saved by earlier releases).
ALIASES = {"augment": "data", "blocks": "models", "encoders": "models", "freezing": "transfer",
           "inspect": "transfer", "layers": "models", "precision": "models",
           "predict": "inference", "unet": "models", "unet3d": "models", "weights": "models",
           "distribute": "training"}
ALLOWED = {
    "errors": set(), "choices": set(), "console": set(), "_lazy": set(),
    "_serializables": set(), "checks": {"errors"}, "fileio": {"errors"},
    "__init__": {"_lazy"}, "__main__": {"cli"},
    "data": SHARED, "losses": SHARED, "saving": SHARED,
    "metrics": SHARED | {"losses"},
    "models": SHARED | {"transfer"},
    "transfer": SHARED | {"models"},
    "inference": SHARED | {"data"},
    "evaluate": SHARED | {"inference", "metrics"},
    "volume_evaluation": SHARED | {"data", "inference", "metrics"},
    "plots": SHARED | {"inference"},
    "plots_confusion": SHARED | {"plots", "inference"},
    "plots_volume": SHARED | {"plots", "inference"},
    "training": SHARED | {"models", "transfer", "losses", "metrics", "evaluate", "saving"},
    "export": SHARED | {"models", "transfer", "evaluate", "saving"},
    "demo": SHARED | {"data", "models", "transfer", "training", "inference", "evaluate",
                      "plots"},
    "cli": SHARED | {"data", "models", "transfer", "training", "inference", "evaluate",
                     "volume_evaluation", "export", "saving", "plots_confusion",
                     "plots_volume", "demo"},
    **{alias: {home} for alias, home in ALIASES.items()},
}


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imports() -> dict[str, set[str]]:
    """Top-level part -> the other parts it imports, at any depth of its modules."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("vggunet.") and name.split(".")[1] != _part(path):
                    edges[_part(path)].add(name.split(".")[1])
    return edges


def test_every_part_imports_only_what_the_map_allows():
    edges = _imports()
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    assert parts - set(ALLOWED) == set(), "parts missing from the map"
    outside = {part: sorted(targets - ALLOWED[part]) for part, targets in edges.items()
               if targets - ALLOWED[part]}
    assert outside == {}


def test_nothing_but_the_entry_point_imports_the_cli():
    assert {part for part, targets in _imports().items() if "cli" in targets} == {"__main__"}


def test_the_map_finds_real_edges():
    # A check that finds no imports would pass everything; these edges are known to exist.
    edges = _imports()
    assert {"losses"} <= edges["metrics"] and {"transfer"} <= edges["models"]
    assert {"models", "training"} <= edges["cli"]
