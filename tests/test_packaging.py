"""The wheel a pip user gets: built from the sources, installed into a fresh environment outside
the checkout, and run there — chapter 1 (tiny profile) and the command line's train/predict — so
that a module missing from the wheel fails CI, not a reader's ``pip install``.

The fresh environment reuses the dependencies already installed for the tests (a ``.pth`` file
puts this environment's site-packages after its own), so the test needs no network; this
environment's editable install of mini_decoders is not seen there (``.pth`` files of an added
directory are not executed), and every step checks that ``mini_decoders`` is the installed wheel.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
CHAPTER_1 = ROOT / "notebooks" / "01_neural_data_and_tokens.ipynb"
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "mini_decoders")

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the build inputs (the checkout stays clean), offline."""
    import shutil

    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    assert (major, minor) >= (77, 0), (f"building the wheel offline needs setuptools>=77 in this environment "
                                       f"(found {setuptools.__version__}); `pip install -e '.[dev]'` installs it")
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
          "--wheel-dir", str(dist), str(source)], tmp, _environment(), timeout=180)
    wheels = sorted(dist.glob("mini_decoders-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points Python at the checkout."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg",
               PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _fresh_environment(tmp: Path, wheel: Path) -> Path:
    """A venv outside the checkout with the wheel installed and this environment's packages behind it."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    own = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp,
                    _environment()).strip())
    # Only site-packages folders: the checkout (on PYTHONPATH in some runs) stays out of the fresh venv.
    borrowed = [path for path in site.getsitepackages() if Path(path).is_dir() and Path(path) != own]
    (own / "zz_test_dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          str(wheel)], tmp, _environment(), timeout=180)
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_every_module_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "mini_decoders").rglob("*.py")
               if "__pycache__" not in path.parts}
    missing = sorted(modules - names)
    assert not missing, f"in the checkout but not in the wheel (a folder without __init__.py?): {missing}"
    assert "mini-decoders = mini_decoders.cli:main" in entry_points
    from mini_decoders import __version__

    assert wheel.name.startswith(f"mini_decoders-{__version__}-py3-none-any"), wheel.name


def test_a_pip_user_runs_chapter_1_and_train_predict_from_the_installed_wheel(wheel, tmp_path):
    started = time.perf_counter()
    venv = _fresh_environment(tmp_path, wheel)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "mini-decoders")
    work = tmp_path / "reader"  # outside the checkout: nothing of it is on the path
    work.mkdir()
    env = _environment(MINI_DECODERS_PROFILE="tiny")
    if REALDATA.is_dir():
        env["MINI_DECODERS_DATA"] = str(REALDATA)  # the pre-filled, read-only download cache

    where = _run([python, "-c", "import mini_decoders; print(mini_decoders.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where

    # the command line, as a reader runs it
    data = work / "data"
    _run([cli, "data", "synth", "--out", str(data), "--sessions", "1", "--trials", "60"], work, env)
    nwb = sorted(data.glob("*.nwb"))
    assert nwb, list(data.iterdir())
    _run([cli, "train", "ndt1", "--data", *map(str, nwb), "--out", "run", "--quiet"], work, env)
    _run([cli, "predict", "run", "--data", *map(str, nwb), "--out", "pred.h5"], work, env)
    assert (work / "run" / "metrics.json").is_file() and (work / "pred.h5").stat().st_size > 0
    scores = json.loads(_run([cli, "eval", "run", "--data", *map(str, nwb)], work, env))
    assert "mean" in scores

    # the real-data registry (small files and the NLB sets) and the course tools ship in the wheel
    if REALDATA.is_dir():
        fetched = _run([cli, "data", "fetch", "yu2009_pmd"], work, env)
        assert "ex1_spikecounts.mat" in fetched
    assert "would download DANDI:000140/" in _run([cli, "data", "fetch", "mc_maze_small", "--dry-run"], work,
                                                   dict(env, MINI_DECODERS_DATA=str(work / "cache")))
    assert "check_" in _run([cli, "course", "list"], work, env)
    editions = subprocess.run([cli, "course", "editions", "--out", "editions"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
    assert editions.returncode == 2 and editions.stderr.count("\n") == 1, editions.stderr
    assert "a pip install does not include" in editions.stderr and "git clone" in editions.stderr

    # chapter 1, executed by a kernel of the fresh environment
    kernel = venv / "share" / "jupyter" / "kernels" / "md-wheel"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mini-decoders wheel", "language": "python"}))
    script = textwrap.dedent(f"""
        import nbformat
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        nb = nbformat.read({str(CHAPTER_1)!r}, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import mini_decoders; print('MODULE', mini_decoders.__file__)"))
        # IPC sockets, not TCP ports: no other kernel on the machine can take this one's ports
        kernel = AsyncKernelManager(kernel_name="md-wheel", transport="ipc", ip={str(tmp_path / "kernel")!r})
        NotebookClient(nb, km=kernel, timeout=600, resources={{"metadata": {{"path": {str(work)!r}}}}}).execute()
        print(nb.cells[-1].outputs[0]["text"])
    """)
    printed = _run([python, "-c", script], work, env, timeout=900)
    module = printed.split("MODULE", 1)[1].strip()
    assert Path(module).is_relative_to(venv), f"chapter 1 ran against {module}, not the installed wheel"
    print(f"packaging test: {time.perf_counter() - started:.0f} s")
