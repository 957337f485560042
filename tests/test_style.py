"""The code's own conventions (docs/ARCHITECTURE.md, Conventions), checked rather than hoped for.

`ruff check` (configured in pyproject.toml: pyflakes' errors, lines of at most 100 characters)
over the package, tests, benchmarks and notebooks; type hints on every public function of the
package; modules of at most ~450 lines.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vggunet"
# Methods whose signature is Keras's (layer, metric, callback, optimizer hooks): their types are
# Keras's to state.
KERAS_HOOKS = {"build", "call", "compute_output_shape", "get_config", "from_config", "result",
               "update_state", "reset_state", "update_step", "get_build_config"}


def _ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "ruff"]


def test_ruff_finds_nothing():
    proc = subprocess.run([*_ruff(), "check", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if (isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                        and item.name not in KERAS_HOOKS and not item.name.startswith("on_")):
                    yield item


def _missing_hints(node: ast.FunctionDef) -> list[str]:
    args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
    missing = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
    return missing + (["return"] if node.returns is None else [])


def test_public_functions_have_type_hints():
    gaps = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in _public_functions(ast.parse(path.read_text())):
            missing = _missing_hints(node)
            if missing:
                gaps.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {missing}")
    assert gaps == []


def test_hint_check_catches_a_missing_hint():
    tree = ast.parse("def f(a: int, b, *, c=1) -> int: ...\nclass K:\n"
                     "    def m(self, x): ...\n    def call(self, x): ...\n")
    found = {node.name: _missing_hints(node) for node in _public_functions(tree)}
    assert found == {"f": ["b", "c"], "m": ["x", "return"]}


def test_modules_stay_readable_in_one_sitting():
    long = {str(p.relative_to(REPO)): n for p in [*PACKAGE.rglob("*.py"),
                                                   *(REPO / "benchmarks").glob("*.py")]
            if (n := p.read_text().count("\n")) > 460}
    assert long == {}
