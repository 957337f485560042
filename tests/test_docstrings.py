"""Docstring examples are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["vggunet.encoders", "vggunet.unet", "vggunet.unet3d", "vggunet.freezing"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
