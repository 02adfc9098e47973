"""Cells: the resumable units of an experiment, and the settings that decide whether one can be reused.

An experiment (the benchmark, the transfer experiment) is a grid of *cells*: train one model (one
recipe) on some data and score it. Each cell ends as one JSON *row* in ``<work>/rows/<name>.json``,
written atomically when the cell is done, stamped with a *key*: a digest of everything that decides
its result (the data files, the settings, the model's recipe). A rerun reuses every row whose key
still matches and that succeeded; rows that ended in an error are retried.

- :class:`BenchmarkSettings`: the settings of a benchmark and the keys of its rows;
- :func:`cell_label` / :func:`split_label` / :func:`recipe_labels`: a cell is a model and a recipe;
- :class:`Cells`: the folder of rows and RUN folders, and the one way a cell is computed
  (an exception becomes an error row, not the end of the experiment);
- :func:`run_python_module`: a cell in a fresh Python process, so that a hard crash of one model
  (a segfault, the OOM killer) is an error row and its peak memory is its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from mini_decoders.files import write_json_atomic
from mini_decoders.models.recipes import ladder as recipe_ladder
from mini_decoders.models.registry import get_model
from mini_decoders.training.device import thread_environment

FORMAT = "mini_decoders.benchmark/1"


# ================================================================================================
# Settings

@dataclass
class BenchmarkSettings:
    """Everything that decides a row's result (and so whether a saved row can be reused).

    Attributes:
        data: absolute paths of the NWB files, in order.
        profile: ``tiny`` / ``quick`` / ``full``.
        seed: seed of every model.
        max_steps: same optimiser steps for every gradient model (None: see ``budget_seconds``).
        budget_seconds: same wall-clock training time for every gradient model (None: each
            model's profile recipe).
        device: training device (None: auto).
        cost_*: the inference-cost sweeps (see :func:`mini_decoders.experiments.cost.inference_cost`).
        threads: torch / BLAS threads of each model's process (None: leave as is); not part of the key.
        work: the work folder; not part of the key.
    """

    data: list[str]
    profile: str
    seed: int = 0
    max_steps: int | None = None
    budget_seconds: float | None = None
    device: str | None = None
    cost_lengths: tuple[float, ...] = ()
    cost_fractions: tuple[float, ...] = ()
    cost_units: tuple[int, ...] = ()
    cost_windows: int = 4
    cost_repeats: int = 1
    threads: int | None = None
    work: str = ""

    def key(self) -> str:
        """A digest of the settings and of the data files (path, size, modification time)."""
        stamp = asdict(self)
        stamp.pop("threads"), stamp.pop("work")
        stamp["files"] = [file_stamp(path) for path in self.data]
        stamp["format"] = FORMAT
        return digest(stamp, default=list)

    def row_key(self, label: str) -> str:
        """:meth:`key` plus the config of the row's model and recipe in this profile (``label`` is
        ``"ndt1"`` or ``"ndt1@paper"``, see :func:`cell_label`): a row trained before the config
        changed (another version of the package) is not reused. ``finetune_*`` keys are left out:
        a row never fine-tunes (the transfer cells, which do, hash the whole recipe)."""
        model, recipe = split_label(label)
        config = {k: v for k, v in get_model(model).recipe_config(self.profile, recipe).items()
                  if not k.startswith("finetune")}
        if config.get("recipe") == "default":
            config.pop("recipe")  # rows saved before recipes existed stay valid
        return digest([self.key(), model, config])

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=list))

    @classmethod
    def from_dict(cls, data: dict) -> "BenchmarkSettings":
        data = dict(data)
        for name in ("cost_lengths", "cost_fractions", "cost_units"):
            data[name] = tuple(data.get(name, ()))
        return cls(**data)

    @property
    def budget(self) -> dict:
        if self.max_steps is not None:
            return {"kind": "steps", "steps": int(self.max_steps), "seconds": None}
        if self.budget_seconds is not None:
            return {"kind": "seconds", "steps": None, "seconds": float(self.budget_seconds)}
        return {"kind": "profile", "steps": None, "seconds": None}


def file_stamp(path: str) -> list:
    """``[path, size, modification time]``: a data file changed since a row was made makes its key differ."""
    stat = Path(path).stat()
    return [str(path), int(stat.st_size), int(stat.st_mtime_ns)]


def digest(value, default=str) -> str:
    """16 hex digits of the SHA-256 of ``value`` as canonical JSON: a row's key."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=default).encode()).hexdigest()[:16]


# ================================================================================================
# A cell is a model and a recipe

def cell_label(model: str, recipe: str | None = None) -> str:
    """``("ndt1", "paper")`` -> ``"ndt1@paper"``; the default recipe is the model's name alone."""
    return model if recipe in (None, "", "default") else f"{model}@{recipe}"


def split_label(label: str) -> tuple[str, str]:
    """``"ndt1@paper+kernel"`` -> ``("ndt1", "paper+kernel")``; ``"ndt1"`` -> ``("ndt1", "default")``."""
    model, _, recipe = label.partition("@")
    return model, recipe or "default"


def row_label(row: dict) -> str:
    """The cell a row belongs to (rows saved before recipes existed have no ``label``)."""
    return row.get("label") or row["model"]


def recipe_labels(names: Sequence[str], recipe: str | None = None, ladder: bool = False) -> list[str]:
    """The cells to run: each model with ``recipe``, or (``ladder``) every step of its recipe ladder.

    Models whose default recipe *is* their published method (the classic baselines, with no
    departures) always run their default. With ``ladder`` the paper's recipe, the paper's plus
    each departure alone, and the default are run (:func:`mini_decoders.models.recipes.ladder`).

    Raises:
        RunError: an unknown recipe or change for one of the models.
    """
    labels = []
    for model in names:
        model_class = get_model(model)
        if not model_class.DEPARTURES:
            labels.append(model)
        elif ladder:
            labels += [cell_label(model, r) for r in recipe_ladder(model_class.DEPARTURES)]
        else:
            labels.append(cell_label(model, model_class.recipe_config("tiny", recipe)["recipe"]))
    return list(dict.fromkeys(labels))


# ================================================================================================
# The rows of an experiment, resumably

class Cells:
    """The work folder of an experiment: one JSON row (``rows/<name>.json``) and one RUN folder
    (``runs/<name>``) per cell.

    Args:
        work: the work folder (created when a row is saved).
    """

    def __init__(self, work: str | os.PathLike):
        self.work = Path(work)

    def row_path(self, name: str) -> Path:
        return self.work / "rows" / f"{name}.json"

    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name

    def read(self, name: str) -> dict | None:
        """The saved row of ``name`` as it is (any key, any status), or None when there is none."""
        try:
            row = json.loads(self.row_path(name).read_text())
        except (OSError, ValueError):
            return None
        return row if isinstance(row, dict) else None

    def done(self, name: str, key: str) -> dict | None:
        """The saved row of ``name`` if it was made with ``key`` and succeeded; else None (compute it)."""
        row = self.read(name)
        return row if row is not None and row.get("key") == key and row.get("status") == "ok" else None

    def save(self, name: str, row: dict) -> None:
        """Write ``row`` as the row of ``name``, atomically (a crash leaves the old row or none)."""
        path = self.row_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, row)

    def compute(self, name: str, key: str, compute: Callable[[], dict],
                failed: Callable[[str, str], dict] | None = None) -> dict:
        """Compute the cell ``name`` and save its row, stamped with ``key``.

        The row is ``compute()``; when that raises (anything but Ctrl-C) it is ``failed(error,
        detail)`` (default: ``{"status": "error", "error", "detail"}``), with the exception in one
        line and the end of its traceback: one broken model is a row, not the end of the experiment.
        """
        try:
            row = compute()
        except KeyboardInterrupt:
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            detail = "\n".join(traceback.format_exc().strip().splitlines()[-12:])
            row = (failed or error_row)(message, detail)
        row["key"] = key
        self.save(name, row)
        return row

    def fresh_run_dir(self, name: str) -> Path:
        """The RUN folder of a cell, emptied (a cell being computed has no finished row)."""
        folder = self.run_dir(name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return folder


def error_row(error: str, detail: str = "") -> dict:
    """The row of a cell that failed: no result, the reason."""
    return {"status": "error", "error": error, "detail": detail}


def run_python_module(module: str, args: Sequence[str], log_path: Path, threads: int | None = None) -> int:
    """Run ``python -m module args...`` to its end, its output going to ``log_path``; its exit code.

    ``threads`` caps the BLAS / OpenMP threads of the child. Ctrl-C (or any exception) while
    waiting stops the child too: terminated, then killed if it has not exited after 10 s.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        env.update(thread_environment(threads))
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
