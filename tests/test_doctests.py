"""Every public function is documented, and every docstring example runs and stays true.

Every module of the package tree is visited (the compatibility aliases that only re-export a
moved module excluded): its docstring examples run, and each public function (everything a
module defines without a leading underscore, so `vggunet.__all__` included) has a docstring with
`Args:` for its parameters and `Returns:` (or `Yields:`) when it returns something.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import vggunet

# Old flat module names kept as aliases of the modules that now hold their code.
ALIASES = {
    "vggunet.augment", "vggunet.blocks", "vggunet.distribute", "vggunet.encoders",
    "vggunet.freezing", "vggunet.inspect", "vggunet.layers", "vggunet.precision",
    "vggunet.predict", "vggunet.unet", "vggunet.unet3d", "vggunet.weights",
}
# Modules whose main functions must show an example.
MUST_HAVE_EXAMPLES = {
    "vggunet.checks", "vggunet.export", "vggunet.losses.factory", "vggunet.metrics.factory",
    "vggunet.metrics.offline", "vggunet.models.blocks", "vggunet.models.encoder",
    "vggunet.models.precision", "vggunet.models.reference", "vggunet.models.unet",
    "vggunet.models.unet3d", "vggunet.saving", "vggunet.transfer.freezing",
    "vggunet.transfer.inspect", "vggunet.inference.predict", "vggunet.data.pairs",
    "vggunet.cli.args",
}
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(vggunet.__path__, "vggunet.")
    if m.name != "vggunet.__main__" and m.name not in ALIASES
)


def test_every_module_with_required_examples_exists():
    missing = sorted(MUST_HAVE_EXAMPLES - set(MODULES))
    assert not missing, f"MUST_HAVE_EXAMPLES names modules that do not exist: {missing}"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public_functions(module):
    for name, obj in vars(module).items():
        if (not name.startswith("_") and inspect.isfunction(obj)
                and obj.__module__ == module.__name__):
            yield name, obj


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0, f"{name} has no docstring examples"


@pytest.mark.parametrize("name", MODULES)
def test_public_functions_document_args_and_returns(name):
    module = importlib.import_module(name)
    problems = []
    for fname, func in _public_functions(module):
        doc = inspect.getdoc(func) or ""
        signature = inspect.signature(func)
        if not doc:
            problems.append(f"{fname}: no docstring")
            continue
        if [p for p in signature.parameters if p not in ("self", "cls")] and "Args:" not in doc:
            problems.append(f"{fname}: no Args: section")
        returns = signature.return_annotation
        if returns not in (None, "None", inspect.Signature.empty) and not (
            "Returns:" in doc or "Yields:" in doc
        ):
            problems.append(f"{fname}: returns {returns} but has no Returns: section")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_everything_exported_is_documented():
    undocumented = [n for n in vggunet.__all__
                    if callable(getattr(vggunet, n)) and not inspect.getdoc(getattr(vggunet, n))]
    assert not undocumented
    assert "export_model" in vggunet.__all__


def test_main_entry_points_show_examples():
    # Readers look these up first; each shows a call that runs.
    for name in ("build_vgg_unet", "build_unet", "build_encoder", "freeze", "unfreeze",
                 "layer_table", "predict_mask", "predict_proba", "create_mask", "export_model",
                 "save_model", "load_model"):
        assert ">>>" in (inspect.getdoc(getattr(vggunet, name)) or ""), name
    for module, name in [("vggunet.losses", "get_loss"), ("vggunet.metrics", "get_metrics"),
                         ("vggunet.metrics", "confusion_matrix"), ("vggunet.cli", "parse_size"),
                         ("vggunet.data", "find_pairs"), ("vggunet.data", "load_split")]:
        assert ">>>" in inspect.getdoc(getattr(importlib.import_module(module), name)), name


def test_readme_cli_reference_lists_every_subcommand_and_flag():
    import argparse
    import re
    from pathlib import Path

    from vggunet.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## CLI$(.*?)^## ", readme, re.S | re.M)
    assert section, "README.md has no '## CLI' section"
    text = section.group(1)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for command, parser in sub.choices.items():
        if f"`{command}`" not in text:
            missing.append(command)
        for action in parser._actions:
            missing += [f"{command} {flag}" for flag in action.option_strings
                        if flag.startswith("--") and flag != "--help"
                        and not re.search(re.escape(flag) + r"(?![\w-])", text)]
    assert not missing, f"README '## CLI' does not mention: {', '.join(missing)}"
