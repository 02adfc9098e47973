"""The real-data registry: what to download, from where, and how to know it arrived intact.

Two kinds of entry live here:

* :class:`DataEntry` — small real recordings (a few MB in all) kept in public GitHub
  repositories. Each file is pinned by commit in its URL and by sha256 and size here, so a
  download is either exactly the bytes the book was written against or an error.
* :class:`DandiEntry` — the Neural Latents Benchmark sets on the DANDI archive, fetched with the
  DANDI client (which verifies its own digests) from a *versioned* dandiset, so results do not
  drift when a draft changes.

Every plain-file download has a total time limit per file, all attempts included:
``$MINI_DECODERS_FETCH_TIMEOUT`` seconds (``mini-decoders data fetch --timeout S``; default
60 s), and says on stderr which host it is waiting for, so a server that accepts the
connection and never answers costs seconds, not minutes per file.

The cache folder is ``$MINI_DECODERS_DATA`` or ``~/.cache/mini_decoders``. Its layout mirrors
``shared/realdata`` (``datahigh_yu2009_pmd/ex1_spikecounts.mat``, ...), so a pre-filled
folder — read-only in CI — works as a cache: a file that verifies is used in place and never
rewritten.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from mini_decoders.data.checksums import ZHANG_DESIMONE_SHA256
from mini_decoders.errors import DataError, DownloadError
from mini_decoders.files import replacing

DEFAULT_CACHE = "~/.cache/mini_decoders"
CACHE_ENV = "MINI_DECODERS_DATA"
_CHUNK_BYTES = 1 << 16
_BACKOFF_S = 0.5  # first wait between attempts; doubles each time (transient network errors clear in seconds)
FETCH_TIMEOUT_ENV = "MINI_DECODERS_FETCH_TIMEOUT"
DEFAULT_FETCH_TIMEOUT_S = 60.0  # per file, all attempts: the largest small file (450 kB) needs seconds


def fetch_timeout(seconds: float | str | None = None) -> float:
    """The total time limit per file: ``seconds``, else ``$MINI_DECODERS_FETCH_TIMEOUT``, else 60 s.

    Raises:
        DataError: the value is not a number of seconds > 0 (the message names where it came from).
    """
    if seconds is not None:
        value, source = seconds, "--timeout"
    elif os.environ.get(FETCH_TIMEOUT_ENV, "").strip():
        value, source = os.environ[FETCH_TIMEOUT_ENV].strip(), FETCH_TIMEOUT_ENV
    else:
        return DEFAULT_FETCH_TIMEOUT_S
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise DataError(f"{source} must be a number of seconds > 0, got {value!r}")
    return number


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- entries
class RemoteFile(NamedTuple):
    """One file of a dataset: where it lives in the cache, where it comes from, what it must be.

    Args:
        path: path relative to the cache folder, e.g. ``"golub2018_bci/exampleData.mat"``.
        url: download URL, pinned to a commit.
        sha256: expected hex digest of the whole file.
        size: expected size in bytes.
    """

    path: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DataEntry:
    """A small real dataset made of plain files."""

    name: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    description: str

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class DandiEntry:
    """A Neural Latents Benchmark dandiset, pinned to a published version.

    Args:
        dandiset: six-digit dandiset id, e.g. ``"000140"``.
        version: published version string, e.g. ``"0.220113.0408"``.
        asset_pattern: glob of the NWB assets inside the dandiset (train and test files).
        size_note: approximate download size, for the user's decision to start it.
    """

    name: str
    dandiset: str
    version: str
    asset_pattern: str
    licence: str
    citation: str
    description: str
    size_note: str = ""

    @property
    def url(self) -> str:
        """The versioned DANDI URL the client understands, e.g. ``"DANDI:000140/0.220113.0408"``."""
        return f"DANDI:{self.dandiset}/{self.version}"

    @property
    def doi(self) -> str:
        return f"https://doi.org/10.48324/dandi.{self.dandiset}/{self.version}"

    def local_dir(self, cache: str | Path | None = None) -> Path:
        """Folder the DANDI client writes into: ``<cache>/dandi/<dandiset>``."""
        return _as_cache(cache) / "dandi" / self.dandiset

    def local_files(self, cache: str | Path | None = None) -> list[Path]:
        """The NWB assets already present in the cache (sorted; may be empty)."""
        return sorted(self.local_dir(cache).glob(self.asset_pattern))


def _raw_github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_YU_REPO, _YU_COMMIT = "kendranoneman/DataHigh", "516c2921b15aaa127e805a8ac2a4bfb8cfc9740d"
_GOLUB_REPO, _GOLUB_COMMIT = "mattgolub/bci_learning", "3e6f00c959096189dd77df57ceb9eb540da83f76"
_ZHANG_REPO, _ZHANG_COMMIT = "emeyers/NeuroDecodeR", "826e2119a69d7879c3f58c75854272324dead2a7"
_ZHANG_FOLDER = "data-raw/raster/Zhang_Desimone_7object_raster_data_mat"
_PYNAPPLE_REPO, _PYNAPPLE_COMMIT = "pynapple-org/pynapple", "7ac20f7a5232785e926c0bd8745093281e1f65fb"

_NLB_CITATION = ("Pei F, Ye J, Zoltowski D, et al. (2021) Neural Latents Benchmark '21: evaluating latent "
                 "variable models of neural population activity. NeurIPS Datasets and Benchmarks.")


def _zhang_desimone_files() -> tuple[RemoteFile, ...]:
    files = []
    for line in ZHANG_DESIMONE_SHA256.strip().splitlines():
        sha256, size, filename = line.split()
        files.append(RemoteFile(f"zhang_desimone_it/{filename}",
                                _raw_github(_ZHANG_REPO, _ZHANG_COMMIT, f"{_ZHANG_FOLDER}/{filename}"),
                                sha256, int(size)))
    return tuple(files)


def _build_registry() -> dict[str, DataEntry | DandiEntry]:
    entries: list[DataEntry | DandiEntry] = [
        DataEntry(
            "yu2009_pmd",
            (RemoteFile("datahigh_yu2009_pmd/ex1_spikecounts.mat",
                        _raw_github(_YU_REPO, _YU_COMMIT, "data/ex1_spikecounts.mat"),
                        "f7ae240b31da62098148c0a4a35ed2c6d2c19b935599aabea633d0e73de16d9f", 147675),
             RemoteFile("datahigh_yu2009_pmd/ex2_rawspiketrains.mat",
                        _raw_github(_YU_REPO, _YU_COMMIT, "data/ex2_rawspiketrains.mat"),
                        "baa0307da896b4fbb488c59c54a6abbf7b0ea32e0dfaf58dbef47abdaa1de309", 250625)),
            licence="GPL-3.0 (DataHigh repository)",
            citation=("Yu BM, Cunningham JP, Santhanam G, Ryu SI, Shenoy KV, Sahani M (2009) Gaussian-process "
                      "factor analysis for low-dimensional single-trial analysis of neural population activity. "
                      "J Neurophysiol 102:614-635. Cowley BR et al. (2013) DataHigh: graphical user interface "
                      "for visualizing and interacting with high-dimensional neural activity. J Neural Eng 10:066012."),
            description="macaque PMd, 61 simultaneous units, delayed center-out reach; 1 ms spike trains "
                        "(ex1: 210 trials, 7 targets x 30, 400 ms delay period; ex2: 112 trials, 2 conditions)"),
        DataEntry(
            "golub2018_bci",
            (RemoteFile("golub2018_bci/exampleData.mat",
                        _raw_github(_GOLUB_REPO, _GOLUB_COMMIT, "exampleData.mat"),
                        "f28fab9442dd0564aab00597796785665f1c3d4b4437e3802c4c99c9696512b1", 252829),),
            licence="BSD-3-Clause",
            citation=("Golub MD, Sadtler PT, Oby ER, Quick KM, Ryu SI, Tyler-Kabara EC, Batista AP, Chase SM, "
                      "Yu BM (2018) Learning by neural reassociation. Nat Neurosci 21:607-616."),
            description="macaque M1, 86 units, BCI cursor control; 45 ms counts grouped by 8 cursor-to-target "
                        "directions, before and after learning a perturbed mapping; 2-D cursor velocity"),
        DataEntry(
            "zhang_desimone_it",
            _zhang_desimone_files(),
            licence="GPL-3 (NeuroDecodeR)",
            citation=("Zhang Y, Meyers EM, Bichot NP, Serre T, Poggio TA, Desimone R (2011) Object decoding "
                      "with attention in inferior temporal cortex. PNAS 108:8850-8855."),
            description="macaque IT, 132 single units from 21 sessions, object viewing: 7 objects x 3 positions, "
                        "1 ms rasters of 1 s around stimulus onset (one file per unit)"),
        DataEntry(
            "pynapple_nwb",
            (RemoteFile("pynapple_nwb/A8604-211122.nwb",
                        _raw_github(_PYNAPPLE_REPO, _PYNAPPLE_COMMIT,
                                    "tests/nwbfilestest/phy/pynapplenwb/A8604-211122.nwb"),
                        "6c9913f1a36c43dc627a541f4e521eb17e305879eb4d9bce949f77970994ac22", 442304),),
            licence="MIT (pynapple)",
            citation=("Viejo G, Levenstein D, Skromne Carrasco S, et al. (2023) Pynapple, a toolbox for data "
                      "analysis in neuroscience. eLife 12:RP85786."),
            description="mouse Neuropixels, trimmed NWB 2.4.0 written by other software: 3 units, one 'wake' "
                        "epoch, no trials and no behaviour"),
        # Versions below are the published ones cited by the NLB'21 papers and DANDI DOIs
        # (10.48324/dandi.<id>/<version>); the NLB tools were written against the 2022-01-13 releases.
        # MC_RTT's current published version is 0.241017.1444 (no earlier published version found).
        DandiEntry("mc_maze", "000128", "0.220113.0400", "sub-Jenkins/*.nwb", "CC-BY-4.0",
                   "Churchland M, Kaufman M (2022) MC_Maze: macaque primary motor and dorsal premotor cortex "
                   "spiking activity during delayed reaching. DANDI archive. " + _NLB_CITATION,
                   "macaque M1+PMd, 182 units, delayed reaching through a maze (NLB MC_Maze)",
                   "about 0.7 GB (train file)"),
        DandiEntry("mc_maze_large", "000138", "0.220113.0407", "sub-Jenkins/*.nwb", "CC-BY-4.0",
                   "Churchland M, Kaufman M (2022) MC_Maze_Large. DANDI archive. " + _NLB_CITATION,
                   "MC_Maze scaled subset, 500 training trials (NLB MC_Maze_Large)"),
        DandiEntry("mc_maze_medium", "000139", "0.220113.0408", "sub-Jenkins/*.nwb", "CC-BY-4.0",
                   "Churchland M, Kaufman M (2022) MC_Maze_Medium. DANDI archive. " + _NLB_CITATION,
                   "MC_Maze scaled subset, 250 training trials (NLB MC_Maze_Medium)"),
        DandiEntry("mc_maze_small", "000140", "0.220113.0408", "sub-Jenkins/*.nwb", "CC-BY-4.0",
                   "Churchland M, Kaufman M (2022) MC_Maze_Small. DANDI archive. " + _NLB_CITATION,
                   "MC_Maze scaled subset, 100 training trials (NLB MC_Maze_Small)"),
        DandiEntry("mc_rtt", "000129", "0.241017.1444", "sub-Indy/*.nwb", "CC-BY-4.0",
                   "O'Doherty J (2024) MC_RTT: macaque motor cortex spiking activity during self-paced "
                   "reaching. DANDI archive. " + _NLB_CITATION,
                   "macaque M1, random-target self-paced reaching, continuous (NLB MC_RTT)", "about 51 MB"),
        DandiEntry("area2_bump", "000127", "0.220113.0359", "sub-Han/*.nwb", "CC-BY-4.0",
                   "Chowdhury RH, Glaser JI, Miller LE (2020) Area 2 of primary somatosensory cortex encodes "
                   "kinematics of the whole arm. eLife 9:e48198. DANDI archive. " + _NLB_CITATION,
                   "macaque area 2 (S1), reaching with mechanical bumps (NLB Area2_Bump)"),
    ]
    return {entry.name: entry for entry in entries}


def names(kind: type | None = None) -> list[str]:
    """Registered names, optionally only of one kind (:class:`DataEntry` or :class:`DandiEntry`)."""
    return [name for name, entry in REGISTRY.items() if kind is None or isinstance(entry, kind)]


def get_entry(name: str) -> DataEntry | DandiEntry:
    """The registry entry called ``name``; :class:`DataError` listing the known names otherwise."""
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}: known names are {', '.join(REGISTRY)}")
    return REGISTRY[name]


def cache_dir() -> Path:
    """The download cache: ``$MINI_DECODERS_DATA`` or ``~/.cache/mini_decoders`` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _as_cache(cache: str | Path | None) -> Path:
    return cache_dir() if cache is None else Path(cache).expanduser()


# ----------------------------------------------------------------------------- verification
# (resolved path, size, mtime_ns) -> sha256. Hashing 132 files twice in one process is waste;
# keying on size and mtime means a file replaced on disk is hashed again.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, remembered for this process while the file is unchanged."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def verify_file(path: str | Path, remote: RemoteFile) -> bool:
    """True when ``path`` exists with the expected size and sha256 (size is checked first: it is free)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size != remote.size:
        return False
    return sha256_of(path) == remote.sha256


def _folder_is_writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or in its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


# ----------------------------------------------------------------------------- download
def fetch_file(remote: RemoteFile, cache: str | Path | None = None, *, timeout: float = 30,
               retries: int = 3, total_timeout: float | None = None,
               log: Callable[[str], None] | None = None) -> Path:
    """The local path of one verified file, downloading it only when needed.

    A cached file that verifies is used in place and never rewritten (the cache may be a
    read-only, pre-filled folder). Otherwise the file is downloaded to a temporary file in the
    same folder, checked, and renamed into place, so the cache never holds a partial file.

    Args:
        remote: the file to fetch.
        cache: cache folder; default :func:`cache_dir`.
        timeout: seconds to wait on the connection and on each read.
        retries: extra attempts after a network failure or a server error (5xx), with
            exponential back-off; a client error (4xx) or a checksum mismatch is not retried.
        total_timeout: seconds for the whole file, every attempt and wait included (None:
            :func:`fetch_timeout`, i.e. ``$MINI_DECODERS_FETCH_TIMEOUT`` or 60 s).
        log: where to say what the download is waiting for (default: a line on stderr).

    Returns:
        Path of the verified file in the cache.

    Raises:
        DownloadError: every attempt failed or the time limit passed, the checksum or size does
            not match, or the cached copy is corrupt and the cache is read-only.
    """
    say = _say if log is None else log
    target = _as_cache(cache) / remote.path
    corrupt_copy = ""
    if target.exists():
        if verify_file(target, remote):
            return target
        found = f"size {target.stat().st_size}, sha256 {sha256_of(target)}"
        if not _folder_is_writable(target.parent):
            raise DownloadError(f"cached file {target} is corrupt: expected size {remote.size}, sha256 "
                                f"{remote.sha256}; found {found}. The cache folder is read-only: delete the file "
                                f"or point {CACHE_ENV} at a writable folder")
        corrupt_copy = (f"; the cached copy {target} is corrupt (expected size {remote.size}, sha256 {remote.sha256}; "
                        f"found {found}) and was left as it is")
    if not _folder_is_writable(target.parent):
        raise DownloadError(f"cannot download {remote.path}: cache folder {target.parent} is not writable "
                            f"(set {CACHE_ENV} or pass cache=... to a writable folder)")
    target.parent.mkdir(parents=True, exist_ok=True)
    limit = fetch_timeout(total_timeout)
    deadline = time.monotonic() + limit
    host = urllib.parse.urlsplit(remote.url).netloc or remote.url
    errors, attempts = [], 0
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(_BACKOFF_S * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        again = f" again (attempt {attempt + 1} of {retries + 1})" if attempt else ""
        say(f"waiting for {host} to send {remote.path}{again} (gives up after {limit:g} s)")
        attempts += 1
        try:
            return _download_verified(remote, target, min(timeout, remaining), deadline)
        except DownloadError:
            raise  # checksum mismatch: retrying would fetch the same wrong bytes
        except urllib.error.HTTPError as error:
            errors.append(f"HTTP {error.code} {error.reason}")
            if error.code < 500:
                break
        except TimeoutError as error:  # the server took the connection but sent nothing in time
            errors.append(f"no answer from {host} within {min(timeout, remaining):.3g} s"
                          + (f" ({error})" if str(error) and "timed out" not in str(error) else ""))
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:  # refused, dropped, truncated
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                errors.append(f"no answer from {host} within {min(timeout, remaining):.3g} s")
            else:
                errors.append(f"{type(error).__name__}: {reason}")
    gave_up = (f"; gave up after {limit:g} s ({FETCH_TIMEOUT_ENV} or --timeout)"
               if time.monotonic() >= deadline else "")
    raise DownloadError(f"could not download {remote.path} from {remote.url} after {attempts} attempt(s) "
                        f"(timeout {timeout:g} s): {'; '.join(errors)}{gave_up}{corrupt_copy}")


def _download_verified(remote: RemoteFile, target: Path, timeout: float, deadline: float) -> Path:
    """One attempt: stream to a temp file next to ``target``, hashing as we go, verify, rename."""
    with replacing(target, suffix=".part") as temp:  # renamed over target only if every check below passes
        digest, size = hashlib.sha256(), 0
        with open(temp, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as response:
            read = getattr(response, "read1", response.read)  # read1: returns what arrived, never waits for more
            for chunk in iter(lambda: read(_CHUNK_BYTES), b""):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:  # a server dripping bytes never times out a single read
                    raise TimeoutError(f"transfer still running at the time limit, {size} bytes in")
            announced = response.headers.get("Content-Length") if response.headers else None
        if announced is not None and size != int(announced):
            # The connection dropped mid-file: transient, so an OSError that the caller retries.
            raise ConnectionError(f"transfer truncated after {size} of {announced} bytes")
        found = digest.hexdigest()
        if found != remote.sha256 or size != remote.size:
            # A mismatch is not transient (wrong URL, or the file changed upstream): fail at once.
            raise DownloadError(f"checksum mismatch for {remote.path} downloaded from {remote.url}: "
                                f"expected sha256 {remote.sha256} ({remote.size} bytes), "
                                f"found sha256 {found} ({size} bytes). Nothing was written to the cache")
    stat = target.stat()
    _HASH_CACHE[(str(target.resolve()), stat.st_size, stat.st_mtime_ns)] = remote.sha256
    return target


def fetch(name: str, cache: str | Path | None = None, *, timeout: float = 30, retries: int = 3,
          progress: bool = False, total_timeout: float | None = None,
          log: Callable[[str], None] | None = None) -> list[Path]:
    """All files of a registered dataset, verified, downloading what is missing or corrupt.

    Args:
        name: a registry name (:func:`names`); DANDI sets go through :func:`fetch_dandi` (the
            DANDI client keeps its own time limits).
        cache: cache folder; default :func:`cache_dir`.
        timeout, retries, total_timeout, log: see :func:`fetch_file`; ``total_timeout`` applies
            to each file.
        progress: show a tqdm bar over files.

    Returns:
        Local paths, in registry order (for a DANDI set: its NWB assets).
    """
    entry = get_entry(name)
    if isinstance(entry, DandiEntry):
        return fetch_dandi(name, cache)
    fetch_timeout(total_timeout)  # a bad limit is an error before any file is touched
    files = entry.files
    if progress:
        files = tqdm(files, desc=f"fetch {name}", unit="file")
    return [fetch_file(remote, cache, timeout=timeout, retries=retries, total_timeout=total_timeout, log=log)
            for remote in files]


def fetch_dandi(name: str, cache: str | Path | None = None, *, dry_run: bool = False) -> list[Path]:
    """Download an NLB dandiset (pinned version) with the DANDI client into ``<cache>/dandi/<id>``.

    The DANDI client checks each asset's digest itself and skips assets already present and
    unchanged, so calling this again is cheap.

    Args:
        name: a :class:`DandiEntry` name (``mc_maze_small``, ...).
        dry_run: only return the NWB files already present; download nothing.

    Returns:
        The NWB assets in the cache matching the entry's pattern.
    """
    entry = get_entry(name)
    if not isinstance(entry, DandiEntry):
        raise DataError(f"{name!r} is not a DANDI set; DANDI sets are {', '.join(names(DandiEntry))}")
    if dry_run:
        return entry.local_files(cache)
    try:
        from dandi.download import DownloadExisting, download  # optional: pip install mini-decoders[dandi]
    except ImportError as error:
        raise DownloadError(f"fetching {name} needs the DANDI client: pip install 'dandi>=0.60' ({error})") from error
    root = entry.local_dir(cache).parent
    root.mkdir(parents=True, exist_ok=True)
    try:
        download(entry.url, root, existing=DownloadExisting.REFRESH)
    except Exception as error:  # the client raises many types (HTTP, JSON, OS); one message for the user
        raise DownloadError(f"DANDI download of {entry.url} into {root} failed: "
                            f"{type(error).__name__}: {error}") from error
    found = entry.local_files(cache)
    if not found:
        raise DownloadError(f"DANDI download of {entry.url} finished but no file matches "
                            f"{entry.asset_pattern!r} in {entry.local_dir(cache)}")
    return found


REGISTRY: dict[str, DataEntry | DandiEntry] = _build_registry()
