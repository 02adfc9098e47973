"""The RUN folder on disk: what a trained run leaves behind, written so that a crash never breaks it.

A RUN folder holds three files:

- ``config.json``: model name, profile, model config, package and format version, bin size and,
  per training session, its id, unit ids, held-out flags and behaviour channels;
- ``checkpoint.pt``: ``torch.save`` of plain values and tensors (``weights_only``-safe); the key
  ``"model"`` is the ``state_dict`` and ``"run"`` the run's own record (format, extra state);
- ``metrics.json``: evaluation on the training sessions' test trials plus training statistics.

While a run is written its folder is locked (one writer per folder) and whatever a failed call
added is removed again (:func:`writing`), unless a checkpoint is there to resume from.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch

from mini_decoders.errors import RunError
from mini_decoders.files import LOCK_NAME, FolderLock, json_default
from mini_decoders.models.base import Decoder
from mini_decoders.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from mini_decoders.version import __version__

FORMAT_VERSION = 1  # bump when config.json / checkpoint.pt change incompatibly
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"


def has_checkpoint(folder: Path) -> bool:
    """Whether a Trainer left something to resume from in ``folder`` (or a stage's subfolder)."""
    return folder.is_dir() and any(folder.rglob(CHECKPOINT_NAME))


@contextlib.contextmanager
def writing(out: Path, *, keep_resumable: bool):
    """Hold ``out`` as this process's RUN folder: created if needed, locked, cleaned up on failure.

    On any failure (Ctrl-C included) the files and folders this call added are removed, unless
    ``keep_resumable`` and a checkpoint exists to resume from; the folder itself goes too when this
    call created it. Anything that was in the folder before is never touched.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a folder; a RUN is a folder ({CONFIG_NAME}, "
                       f"{CHECKPOINT_NAME}, {METRICS_NAME}): choose another --out")
    try:
        out.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    try:
        lock = FolderLock(out, "run folder").acquire()
    except BaseException:
        if created:
            _remove_quietly(out)  # only when still empty: another writer may have claimed it meanwhile
        raise
    before = {path.name for path in out.iterdir()}
    try:
        yield
    except BaseException:
        if not (keep_resumable and has_checkpoint(out)):
            for path in out.iterdir():
                if path.name not in before and path.name != LOCK_NAME:
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        lock.release()
        if created:
            _remove_quietly(out)
        raise
    lock.release()


def _remove_quietly(folder: Path) -> None:
    """Remove ``folder`` if it is empty (anything inside means someone else is using it)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def history_summary(history: dict) -> dict:
    """What of a fit's history goes into metrics.json: per-session choices, the last log line and
    the training loss curve (``loss_curve``: ``[step, loss]`` per logged step, for plots and checks)."""
    summary = {k: v for k, v in history.items() if k != "records"}
    records = history.get("records", [])
    if records and "session" in records[0]:
        summary["sessions"] = records  # closed-form fits: one small record per session
    elif records:
        summary["steps"] = len(records)
        summary["last"] = records[-1]
        summary["loss_curve"] = [[record["step"], record["loss"]] for record in records if "loss" in record]
    return json.loads(json.dumps(summary, default=json_default))


def save_run_checkpoint(out: Path, net: Decoder) -> None:
    """Add the run's record to ``checkpoint.pt`` (keeping what a Trainer stored there for resuming)."""
    path = out / CHECKPOINT_NAME
    payload = load_checkpoint(path) if path.exists() else {}
    # non-tensor entries (a vocabulary's ids kept as extra state) are plain python: kept as they are
    payload["model"] = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in net.state_dict().items()}
    payload["run"] = {"format_version": FORMAT_VERSION, "model": net.name, "extra_state": net.extra_state()}
    save_checkpoint(path, payload)


def read_config(path: Path) -> dict:
    """The checked ``config.json`` of the RUN folder ``path``.

    Raises:
        RunError: missing, not JSON, of another format version, or lacking a required field.
    """
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise RunError(f"{path} is not a run folder: {CONFIG_NAME} is missing (a RUN folder holds {CONFIG_NAME}, "
                       f"{CHECKPOINT_NAME} and {METRICS_NAME}; train one with `mini-decoders train MODEL --data ... "
                       f"--out {path}`)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{config_path} is not valid JSON ({error}); the run folder is damaged, retrain it") from None
    if not isinstance(config, dict):
        raise RunError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise RunError(f"{config_path}: run format version {version!r} is not supported by mini-decoders "
                       f"{__version__}, which reads format version {FORMAT_VERSION}; the run was written "
                       f"by mini-decoders {config.get('package_version', 'unknown')}: retrain it with this version, "
                       "or load it with the version that wrote it")
    missing = [key for key in ("model", "model_config", "sessions") if key not in config]
    if missing:
        raise RunError(f"{config_path}: missing field(s) {missing}; the run folder is damaged, retrain it")
    return config
