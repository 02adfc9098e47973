"""Writing files safely: atomically, readable like any new file, and one writer per folder.

Everything the package writes for a user (RUN folders, PRED.h5, NWB, downloads) goes through two
ideas:

- :func:`replacing`: write a temporary file next to the destination and rename it over the
  destination only once it is complete. A crash, a full disk or Ctrl-C leaves the old file (or
  nothing) and no temporary file behind. The temporary file is created with mode ``0o666`` minus
  the umask, like any file ``open()`` creates (``tempfile.mkstemp`` would make it ``0o600``,
  unreadable for a teammate or a web server, unlike the NWB files next to it).
- :class:`FolderLock`: an exclusive lock on a file inside a folder, so two processes never write
  one RUN folder at once. The operating system releases the lock when its holder exits, even
  after ``kill -9``, so a stale lock never blocks anyone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mini_decoders.errors import RunError

LOCK_NAME = ".lock"


def new_file(folder: str | os.PathLike, prefix: str, suffix: str) -> Path:
    """Create a new, empty file with a unique name in ``folder`` (mode 0o666 minus the umask)."""
    folder = Path(folder)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, flags, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not create a temporary file in {folder}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A new temporary file next to ``path``, renamed over ``path`` when the block succeeds.

    Example::

        with replacing("PRED.h5") as temp:
            with h5py.File(temp, "w") as file:
                ...

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    temp = new_file(path.parent, f".{path.name}.", suffix)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`replacing`)."""
    path = Path(path)
    with replacing(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to a temp file next to ``path``, then rename it over ``path``.

    NumPy numbers and arrays are written as plain numbers and lists.

    Raises:
        RunError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path} is a folder; expected the path of a .json file to write (e.g. {path / 'scores.json'})")
    with replacing(path) as temp, open(temp, "w") as file:
        json.dump(data, file, indent=2, default=json_default)


def json_default(value: Any) -> Any:
    """``json.dump``'s ``default``: NumPy scalars and arrays as Python numbers and lists."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")



class FolderLock:
    """One writer per folder: an exclusive lock on ``folder/.lock`` while a process writes there.

    ``acquire`` never waits: a second writer gets a :class:`RunError` naming the holder (its pid,
    host and command, which the holder writes into the lock file). The lock is ``flock`` on POSIX
    (``msvcrt.locking`` on Windows), which the operating system drops when the holder exits for any
    reason, so a lock file left behind by a killed process does not block: it is simply reused.
    ``release`` removes the lock file, so a finished RUN folder holds only its own files.

    Args:
        folder: the folder to lock (it must exist).
        what: how messages name the folder, e.g. ``"run folder"``.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                _lock(fd)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunError(f"{self.what} {self.folder} is in use by another process ({holder}); two writers "
                               "would overwrite each other's files. Wait for it to finish, or choose another --out"
                               ) from None
            # The previous holder may have removed the file between our open and our lock: then we
            # hold a lock on a file nobody else can see. Only a lock on the file at the path counts.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:300]}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding the lock: nobody takes a doomed file
        except OSError:
            pass  # Windows cannot remove an open file; the next writer reuses it
        finally:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(fd: int) -> None:
    """Lock ``fd`` exclusively without waiting; OSError when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 400).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
