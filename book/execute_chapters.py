"""Execute the book's chapters side by side, one per CPU core, into the cache jupyter-book reads.

    python book/execute_chapters.py [--jobs N] [--threads T] [--root DIR]

Why: `jupyter-book build` (myst-nb, ``execute_notebooks: cache``) executes chapters one after
another. A chapter's models are small and train fastest on one thread, so on this project's 2-core
machines one core did the work and the other waited: a fresh build took over an hour. This script
executes every chapter of ``_toc.yml`` that has no up-to-date entry in the execution cache, the
longest first (by its last run time, else the budget its introduction states), ``--jobs`` at a time
(default: one per CPU core), each kernel limited to ``--threads`` BLAS/OpenMP threads (default:
cores // jobs), and stores each executed notebook in the cache exactly as myst-nb does (same cache
folder, same notebook hash, ``execution_seconds``).
The `jupyter-book build` that follows finds every chapter there and executes none.

Chapters that train the same run (same model, recipe, data and seed) share it through the run cache
(``mini_decoders/run_cache.py``): when two chapters ask for one run at the same moment, the second
waits for the first to store it, so no run is trained twice.

Kernels talk to this script over IPC sockets in a private temporary folder (POSIX), not TCP ports on
127.0.0.1: two kernels started at once cannot pick the same ports (.ci/kernel_lock.py says why
that matters).

Exit status 0 when every chapter was executed or already cached; 1 when a chapter failed: its cell's
error is printed, and the other chapters stay cached, so a rerun executes only what failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nbformat
import yaml

def read_settings(root: Path) -> dict:
    """What ``_config.yml``'s ``execute`` section says, with jupyter-book's defaults."""
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    execute = config.get("execute") or {}
    cache = execute.get("cache") or "_build/.jupyter_cache"  # jupyter-book: <output>/.jupyter_cache
    return {"mode": execute.get("execute_notebooks", "auto"),
            "cache": (root / cache).resolve(),
            "exclude": list(execute.get("exclude_patterns") or []),
            "timeout": execute.get("timeout", 30),
            "allow_errors": bool(execute.get("allow_errors", False)),
            "in_temp": bool(execute.get("run_in_temp", False))}


def toc_notebooks(root: Path, exclude: list[str]) -> list[Path]:
    """The ``.ipynb`` files ``_toc.yml`` names, in its order, less those ``exclude`` patterns match."""
    toc = yaml.safe_load((root / "_toc.yml").read_text()) or {}
    files: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():  # root first, then parts > chapters > sections
                if key in ("root", "file") and isinstance(value, str):
                    files.append(value)
                elif key in ("parts", "chapters", "sections"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    notebooks = []
    for name in files:
        path = root / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not any(fnmatch.fnmatch(relative, pattern) for pattern in exclude):
            notebooks.append(path)
    return notebooks


def is_cached(cache, path: Path) -> bool:
    """Whether the cache holds an executed notebook with ``path``'s code (what myst-nb looks up)."""
    try:
        cache.match_cache_notebook(nbformat.read(path, as_version=4))
        return True
    except KeyError:
        return False


def estimated_seconds(cache, path: Path) -> float:
    """How long ``path`` is expected to run: its last execution in the cache (an earlier version of the
    chapter), else the budget its introduction states, else a minute."""
    from mini_decoders.run_time import stated_budget_minutes

    earlier = [record for record in cache.list_cache_records() if record.uri == str(path)
               and "execution_seconds" in (record.data or {})]
    if earlier:
        return float(max(earlier, key=lambda record: record.created).data["execution_seconds"])
    budget = stated_budget_minutes(json.loads(path.read_text()))
    return 60.0 * budget if budget else 60.0


def longest_first(paths: list[Path], estimates: dict[Path, float]) -> list[Path]:
    """``paths`` by estimated run time, longest first (ties keep the table of contents' order).

    Each worker takes the next chapter when it is free, so starting the long ones first leaves the
    short ones to fill the end: both cores finish at about the same time. (In the table of contents'
    order the 11-minute chapter 10 started last and ran alone for its whole length.)
    """
    return sorted(paths, key=lambda path: -estimates[path])


def execute_notebook(path: str, cwd: str | None, timeout: int, allow_errors: bool, threads: int) -> dict:
    """Execute one notebook in a fresh kernel (in a worker process); its executed JSON and time, or its error.

    ``cwd``: the kernel's working folder; None: a temporary one, removed afterwards (``run_in_temp``).
    """
    from jupyter_cache.executors.utils import single_nb_execution
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    from mini_decoders.training.device import thread_environment

    os.environ.update(thread_environment(threads))  # the kernel inherits them
    notebook = nbformat.read(path, as_version=4)
    name = Path(path).stem
    print(f"execute_chapters: {name} started", flush=True)
    sockets = tempfile.mkdtemp(prefix="md-kernel-")  # IPC sockets: kernel-1, kernel-2, ... in here
    scratch = None if cwd is not None else tempfile.mkdtemp(prefix="md-chapter-")
    kernel = AsyncKernelManager(kernel_name=notebook.metadata.get("kernelspec", {}).get("name", "python3"))
    if os.name == "posix":
        kernel.transport, kernel.ip = "ipc", os.path.join(sockets, "kernel")
    started = time.perf_counter()
    try:
        result = single_nb_execution(notebook, cwd=cwd or scratch, timeout=timeout, allow_errors=allow_errors,
                                     meta_override=True, km=kernel)
        error = None if result.err is None else _one_line(result.err)
        traceback = result.exc_string
    except Exception as err:  # the kernel died, did not start, ...: the chapter failed, the others go on
        error, traceback = f"{type(err).__name__}: {_one_line(err)}", None
    finally:
        if kernel.has_kernel:  # nbclient shuts down only the kernels it created itself
            run_sync(kernel.shutdown_kernel)(now=True)
        for folder in (sockets, scratch):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    return {"notebook": nbformat.writes(notebook), "seconds": time.perf_counter() - started,
            "error": error, "traceback": traceback}


def _one_line(err: BaseException) -> str:
    """The last non-empty line of an error's text (a cell error's text ends with ``Name: message``)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # IPython colours the traceback's text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(err).__name__


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the book's folder (with _config.yml and _toc.yml)")
    parser.add_argument("--jobs", type=int, default=None, help="chapters at a time (default: one per CPU core)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads per chapter (default: CPU cores // jobs, at least 1)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    settings = read_settings(root)
    if settings["mode"] != "cache":
        print(f"execute_chapters: _config.yml executes notebooks with {settings['mode']!r}, not 'cache': "
              "nothing to prepare, jupyter-book executes them")
        return 0

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.cache.db import NbProjectRecord

    cache = get_cache(settings["cache"])
    chapters = toc_notebooks(root, settings["exclude"])
    todo = [path for path in chapters if not is_cached(cache, path)]
    cores = default_jobs()
    jobs = max(1, min(args.jobs or cores, len(todo) or 1))
    threads = args.threads or max(1, cores // jobs)
    print(f"execute_chapters: {len(chapters) - len(todo)} of {len(chapters)} chapters cached; executing "
          f"{len(todo)}, {jobs} at a time, {threads} thread(s) each", flush=True)
    if not todo:
        return 0
    estimates = {path: estimated_seconds(cache, path) for path in todo}
    todo = longest_first(todo, estimates)
    print("execute_chapters: order (longest first, estimated): "
          + ", ".join(f"{path.stem[:2]} {estimates[path] / 60:.0f} min" for path in todo), flush=True)
    failed = []
    started = time.perf_counter()
    # fork where it exists: the workers need nothing re-imported, and spawn would re-run this file
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {}
        for path in todo:  # the pool takes them in this order
            cwd = None if settings["in_temp"] else str(path.parent)
            futures[pool.submit(execute_notebook, str(path), cwd, settings["timeout"], settings["allow_errors"],
                                threads)] = path
        for future in as_completed(futures):
            path = futures[future]
            result = future.result()
            record = cache.add_nb_to_project(str(path))
            NbProjectRecord.remove_tracebacks([record.pk], cache.db)
            if result["error"] is not None:
                failed.append(path)
                log = settings["cache"].parent / "execute_chapters" / f"{path.stem}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(result["traceback"] or result["error"])
                if result["traceback"]:
                    NbProjectRecord.set_traceback(record.uri, result["traceback"], cache.db)
                print(f"execute_chapters: {path.stem} FAILED after {result['seconds']:.0f} s: {result['error']} "
                      f"(traceback: {log})", flush=True)
                continue
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(result["notebook"], as_version=4), record.uri,
                                                      data={"execution_seconds": result["seconds"]}),
                                        check_validity=False, overwrite=True)
            print(f"execute_chapters: {path.stem} executed in {result['seconds']:.0f} s", flush=True)
    elapsed = time.perf_counter() - started
    if failed:
        print(f"execute_chapters: {len(failed)} chapter(s) failed ({', '.join(p.stem for p in failed)}); fix and "
              "rerun: the chapters that executed stay cached", file=sys.stderr, flush=True)
        return 1
    print(f"execute_chapters: {len(todo)} chapter(s) executed in {elapsed / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
