"""Run a command while holding this machine's Jupyter-kernel lock:  kernel_lock.py -- COMMAND [ARGS...]

Why: `make test` (nbval) and `make book` (jupyter-book) both start Jupyter kernels, and
jupyter_client gives each kernel TCP ports on 127.0.0.1 that it finds free by binding and
releasing them just before the kernel binds them itself. Two runs on one machine can pick the same
ports in that gap: a kernel then fails to start, or a client talks to the other run's kernel,
whose signing key differs, and waits on a reply that never comes until its cell timeout (a
10-minute hang, seen). Both make targets run under one machine-wide lock, so they take turns: the
second says whom it waits for and starts when the first ends. The operating system releases the
lock when its holder exits, even after kill -9, so a crashed run never blocks the next one.

Other ways were weighed: kernels over IPC sockets instead of TCP cannot be chosen from outside
(nbval and jupyter-book create their kernel managers without a configuration to read) and do
not exist on Windows; separate port ranges are not something jupyter_client offers.

The lock is /tmp/mini-decoders-jupyter-kernels.lock (one per machine, whatever the checkout or
user: ports are shared machine-wide); MINI_DECODERS_KERNEL_LOCK names another file (tests).
Exits with the command's exit status.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def lock_path() -> Path:
    if os.environ.get("MINI_DECODERS_KERNEL_LOCK"):
        return Path(os.environ["MINI_DECODERS_KERNEL_LOCK"])
    folder = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    return folder / "mini-decoders-jupyter-kernels.lock"


def open_lock(path: Path) -> tuple[int, bool]:
    """(file descriptor, writable); another user's lock file can still be locked read-only."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY), False
    try:
        os.chmod(path, 0o666)  # let every user of the machine take turns on it
    except OSError:
        pass
    return fd, True


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    command = argv[1:]
    path = lock_path()
    fd, writable = open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip() or "another process"
        print(f"waiting for the Jupyter kernel lock {path}, held by {holder}: notebook tests and book builds "
              "take turns so that their kernels never share ports", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    if writable:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} in {os.getcwd()}: {' '.join(command)}"[:500]
                  .encode(), 0)
    try:
        child = subprocess.Popen(command)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # Ctrl-C reached the command too; wait for it to stop
                continue
    finally:
        if writable:
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the lock


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
