"""Atomic file writes: the one writer behind every file vggunet produces.

A file is written to a temporary name in its destination folder, flushed to disk, and renamed
over the destination (`os.replace`, atomic on POSIX and Windows), then the folder entry is
synced. A crash at any point leaves either the previous file or the new one, never a truncated
file. Temporary files are opened with `open(..., "xb")` rather than `tempfile.mkstemp`, whose
0600 mode would survive the rename: files get the permissions the user's umask gives, like any
other file the user writes, so a run folder on a shared project drive stays readable by the
group.

A failure raises `error` (default `WriteError`, an `OSError`) naming the destination and saying
that the previous file is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable

from vggunet.errors import WriteError

__all__ = [
    "atomic_copy",
    "atomic_replace_dir",
    "make_temp_dir",
    "atomic_save_model",
    "atomic_write",
    "check_destination",
    "fsync_dir",
    "make_folder",
    "remove_stale_temps",
    "temp_path",
    "write_json_atomic",
]

TEMP_MARK = ".vgtmp"
"""Part of every temporary name (`.<name>.<hex>.vgtmp<suffix>`), so leftovers can be found."""


def fsync_dir(folder: Path) -> None:
    """Flushes a folder's entries to disk (makes a rename durable); a no-op where unsupported.

    Args:
        folder: the folder.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path` that keeps its suffix (Keras wants `.keras`).

    Args:
        path: the destination.

    Returns:
        `.<stem>.<random hex>.vgtmp<suffix>` in the same folder.
    """
    return path.parent / f".{path.stem}.{uuid.uuid4().hex[:12]}{TEMP_MARK}{path.suffix}"


def _error(error: type[Exception], errno: int | None, message: str) -> Exception:
    """`error` with errno and message where it is an `OSError` (and not also a `ValueError`,
    whose constructor would leave the errno unset and the message shown as a tuple)."""
    if issubclass(error, OSError) and not issubclass(error, ValueError):
        return error(errno, message)
    return error(message)


def _blocking_file(path: Path) -> Path | None:
    """The nearest ancestor of `path` (or `path` itself) that exists and is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def make_folder(path: str | os.PathLike, *, what: str = "folder ", of: str = "",
                error: type[Exception] = WriteError) -> Path:
    """Creates folder `path` and its parents (nothing if it exists), with a message that says why
    it cannot be created.

    Args:
        path: the folder.
        what: a word for the message, e.g. `"run folder "`.
        of: said after the path, e.g. `" for 'metrics.json'"`.
        error: exception class raised on failure (called with errno and message when it is
            an `OSError`).

    Returns:
        The folder's path.

    Raises:
        error: the folder cannot be created, e.g. because it or a parent is a file.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError as exc:
        blocker = _blocking_file(path)
        reason = (f"'{blocker}' is a file, not a folder" if blocker is not None
                  else exc.strerror or str(exc))
        raise _error(error, exc.errno, f"cannot create {what}'{path}'{of}: {reason}") from exc


def check_destination(path: str | os.PathLike, *, what: str = "",
                      error: type[Exception] = WriteError) -> Path:
    """Checks before any work that a file can be written at `path`: it is not a folder and no
    parent is a file (the writer creates missing folders).

    Args:
        path: where the file will go.
        what: a word for the message, e.g. `"metrics "`.
        error: exception class raised.

    Returns:
        The path.

    Raises:
        error: `path` is a folder, or a parent of it is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise _error(error, None, f"cannot write {what}'{path}': it is a folder")
    blocker = _blocking_file(path.parent)
    if blocker is not None:
        raise _error(error, None, f"cannot write {what}'{path}': '{blocker}' is a file, "
                                  f"not a folder")
    return path


def _fail(error: type[Exception], path: Path, exc: OSError, what: str) -> Exception:
    reason = exc.strerror or str(exc)
    if path.is_dir():
        reason = "it is a folder"
    return _error(error, exc.errno, f"cannot write {what}'{path}': {reason}; the previous "
                                    f"'{path.name}' (if any) is kept")


def _commit(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_via_temp(
    path: str | os.PathLike,
    produce: Callable[[Path], None],
    error: type[Exception],
    what: str,
) -> Path:
    path = Path(path)
    make_folder(path.parent, what="the folder ", of=f" for {what}'{path.name}'", error=error)
    tmp = temp_path(path)
    try:
        produce(tmp)
        _commit(tmp, path)
    except OSError as exc:
        raise _fail(error, path, exc, what) from exc
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def atomic_write(
    path: str | os.PathLike,
    data: bytes | str | Callable[[BinaryIO], None],
    *,
    error: type[Exception] = WriteError,
    what: str = "",
) -> Path:
    """Writes bytes, text (UTF-8) or whatever `data(stream)` writes, atomically.

    Args:
        path: destination; its folder is created.
        data: the bytes or text, or a function writing to a binary stream (e.g. `img.save`).
        error: exception class raised on failure (called with errno and message when it is
            an `OSError`).
        what: a word for the message, e.g. `"checkpoint "`.

    Returns:
        The destination path.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "notes" / "a.txt"
        >>> atomic_write(target, "hello").read_text()
        'hello'
    """
    def produce(tmp: Path) -> None:
        with open(tmp, "xb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)

    return _write_via_temp(path, produce, error, what)


def write_json_atomic(data: Any, path: str | os.PathLike, *,
                      error: type[Exception] = WriteError) -> Path:
    """Writes `data` as indented JSON (trailing newline), atomically.

    Args:
        data: JSON-serialisable data.
        path: destination; its folder is created.
        error: exception class raised on failure.

    Returns:
        The destination path.
    """
    return atomic_write(path, json.dumps(data, indent=2) + "\n", error=error)


def atomic_save_model(model: Any, path: str | os.PathLike, *,
                      error: type[Exception] = WriteError, what: str = "") -> Path:
    """Saves a Keras model to a `.keras` file atomically.

    Args:
        model: the Keras model.
        path: destination ending in `.keras`.
        error: exception class raised on failure.
        what: a word for the message, e.g. `"checkpoint "`.

    Returns:
        The destination path.
    """
    return _write_via_temp(path, lambda tmp: model.save(tmp), error, what)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike, *,
                error: type[Exception] = WriteError, what: str = "") -> Path:
    """Copies a file's contents atomically (the destination gets umask permissions).

    Args:
        src: the file to copy.
        dst: destination; its folder is created.
        error: exception class raised on failure.
        what: a word for the message.

    Returns:
        The destination path.
    """
    def produce(tmp: Path) -> None:
        with open(src, "rb") as source, open(tmp, "xb") as target:
            shutil.copyfileobj(source, target)

    return _write_via_temp(dst, produce, error, what)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Deletes temporary files that a killed write left in `folder`.

    Args:
        folder: the folder to clean (not recursive).

    Returns:
        The removed paths.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for stale in folder.glob(f".*{TEMP_MARK}*"):
        try:
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass  # a leftover temp file is litter, never a reason to stop
    return removed


def make_temp_dir(beside: str | os.PathLike) -> Path:
    """Creates an empty temporary folder next to `beside`, with umask permissions.

    `tempfile.mkdtemp` would create it 0700, which a rename would carry to the destination.

    Args:
        beside: the destination the folder will replace.

    Returns:
        The new folder (`.<name>.<hex>.vgtmp`).
    """
    beside = Path(beside)
    make_folder(beside.parent)
    folder = beside.parent / f".{beside.name}.{uuid.uuid4().hex[:12]}{TEMP_MARK}"
    folder.mkdir()
    return folder


def atomic_replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Moves the finished folder `tmp` to `out`, replacing an older folder there.

    The old folder is renamed aside first, so at every moment one complete folder is at `out`
    or beside it, and the old one is deleted only once the new one is in place.

    Args:
        tmp: the finished folder (e.g. from `make_temp_dir(out)`).
        out: the destination.

    Returns:
        The destination path.
    """
    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        os.replace(tmp, out)
        fsync_dir(out.parent)
        return out
    old = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.old{TEMP_MARK}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out
