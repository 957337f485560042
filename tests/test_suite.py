"""The test suite's own scheduling: the file order that balances `make test`'s workers."""

from __future__ import annotations

from pathlib import Path

from conftest import HEAVIEST_FILES_FIRST

TESTS = Path(__file__).resolve().parent


def test_heaviest_files_are_test_files_listed_once():
    assert len(set(HEAVIEST_FILES_FIRST)) == len(HEAVIEST_FILES_FIRST)
    missing = [name for name in HEAVIEST_FILES_FIRST if not (TESTS / name).is_file()]
    assert missing == [], f"HEAVIEST_FILES_FIRST names files that are gone: {missing}"


def test_make_test_keeps_the_collection_order():
    """Without --no-loadscope-reorder, xdist reorders files by test count and the list is moot."""
    makefile = (TESTS.parent / "Makefile").read_text()
    target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "--dist loadfile" in target and "--no-loadscope-reorder" in target
