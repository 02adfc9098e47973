"""`make test` and `make book` take turns on Jupyter kernels instead of deadlocking each other."""

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK_SCRIPT = ROOT / ".ci" / "kernel_lock.py"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target, tool", [("test", "-m pytest"), ("book", "jupyter-book build")])
def test_make_test_and_make_book_run_their_kernels_under_one_lock(target, tool):
    commands = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    line = next(line for line in commands.splitlines() if tool in line)
    assert ".ci/kernel_lock.py --" in line and line.index(".ci/kernel_lock.py") < line.index(tool), line


def test_the_second_command_waits_for_the_first_then_runs(tmp_path):
    lock = tmp_path / "kernels.lock"
    marker = tmp_path / "ran"
    env = {**os.environ, "MINI_DECODERS_KERNEL_LOCK": str(lock)}
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a book build is executing chapters
        waiting = subprocess.Popen([sys.executable, str(LOCK_SCRIPT), "--", sys.executable, "-c",
                                    f"open({str(marker)!r}, 'w').write('ran'); raise SystemExit(3)"],
                                   env=env, stderr=subprocess.PIPE, text=True)
        line = waiting.stderr.readline()
        assert f"waiting for the Jupyter kernel lock {lock}" in line, line
        assert waiting.poll() is None and not marker.exists()
    assert waiting.wait(timeout=60) == 3  # the command's own exit status comes back
    assert marker.read_text() == "ran"


def test_nothing_waits_when_the_lock_is_free(tmp_path):
    env = {**os.environ, "MINI_DECODERS_KERNEL_LOCK": str(tmp_path / "kernels.lock")}
    result = subprocess.run([sys.executable, str(LOCK_SCRIPT), "--", sys.executable, "-c", "print('ok')"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "ok\n" and result.stderr == ""
