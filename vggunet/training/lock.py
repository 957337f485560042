"""The run lock: one live training process per run folder.

A run holds `run.lock` in its folder from start to end. The file names the holder (process id,
host, start time, command) and carries an OS lock (`fcntl.flock`; `msvcrt.locking` on Windows)
that the kernel drops when the process ends in any way, SIGKILL included. So:

* a second run into a folder that a live run holds stops at once with `RunLockedError` naming
  the holder;
* a lock file left by a process that died (killed, crashed, machine restarted) holds no OS lock
  any more: the next run takes it over and says so in one line;
* the file is removed when the run ends, normally or by an exception.

Only the chief of a distributed run holds the lock; the other workers write to temporary
folders of their own.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from vggunet.console import Say, resolve_say
from vggunet.errors import RunLockedError
from vggunet.fileio import make_folder

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = ["RunLock"]

_FAR = 1 << 30  # Windows locks bytes: lock one far beyond the content, which stays readable


def _os_lock(fd: int) -> bool:
    """Takes the OS lock on `fd` without waiting; False when another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            os.lseek(fd, _FAR, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _command() -> str:
    """This process's command line as typed (`python -m vggunet train ...`), shortened."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    text = " ".join([os.path.basename(argv[0]), *argv[1:]]) if argv else "?"
    return text if len(text) <= 300 else text[:297] + "..."


def _holder_text(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not written its details yet"
    return (f"process {holder.get('pid')} on host {holder.get('host')!r}, started "
            f"{holder.get('started')}, command {holder.get('command')!r}")


class RunLock:
    """Holds a run folder for this process; a context manager (`with RunLock(folder): ...`).

    Args:
        folder: the run folder (created if needed).
        say: where the note about a cleared stale lock goes (default: printed).
    """

    def __init__(self, folder: str | os.PathLike, say: Say | None = None) -> None:
        self.path = Path(folder) / "run.lock"
        self._say = resolve_say(True, say)
        self._fd: int | None = None

    def _read(self, fd: int) -> dict[str, Any]:
        os.lseek(fd, 0, os.SEEK_SET)
        text = b""
        while chunk := os.read(fd, 65536):
            text += chunk
        try:
            holder = json.loads(text.decode("utf-8")) if text.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            holder = {"command": text[:200].decode("utf-8", "replace")}
        return holder if isinstance(holder, dict) else {}

    def _open_locked(self) -> int:
        """Opens the lock file and takes its OS lock; the file must still be the one named."""
        make_folder(self.path.parent, what="the run folder ")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not _os_lock(fd):
                holder = self._read(fd)
                os.close(fd)
                raise self._locked(holder)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            # The holder removed the file between our open and lock: lock the new one.
            os.close(fd)

    def check(self) -> None:
        """Fails early when a live run holds the folder; takes nothing and creates nothing.

        Raises:
            RunLockedError: a live process holds the folder; the message names it.
        """
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return  # no lock file (or none this process can open): acquire() decides
        try:
            if not _os_lock(fd):
                raise self._locked(self._read(fd))
        finally:
            os.close(fd)  # closing drops a lock taken just now

    def _locked(self, holder: dict[str, Any]) -> RunLockedError:
        return RunLockedError(
            f"run folder '{self.path.parent}' is in use by another training run: "
            f"{_holder_text(holder)}. Wait for it to end or use another out_dir "
            f"(lock file '{self.path}')."
        )

    def acquire(self) -> "RunLock":
        """Takes the lock, clearing a stale one (its process is gone) with a note.

        Returns:
            This lock.

        Raises:
            RunLockedError: a live process holds the folder; the message names it.
        """
        fd = self._open_locked()
        stale = self._read(fd)
        if stale:
            self._say(f"Cleared a stale run lock in '{self.path.parent}': "
                      f"{_holder_text(stale)} is no longer running.")
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": _command()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Removes the lock file and drops the OS lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink()  # while still locked, so no other run takes the old file
        except OSError:
            pass  # Windows cannot remove an open file: removed after closing
        os.close(fd)
        if self.path.exists() and fcntl is None:  # pragma: no cover - Windows
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
