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
    for line in _ZHANG_DESIMONE_SHA256.strip().splitlines():
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
        from tqdm.auto import tqdm
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
        from dandi.download import DownloadExisting, download
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


# ----------------------------------------------------------------------------- Zhang & Desimone checksums
# "sha256 size filename" for the 132 unit files (from shared/realdata/zhang_desimone_it/SHA256SUMS).
_ZHANG_DESIMONE_SHA256 = """
35f52e5ffb675b5ca9cce46f96b6ff493e330a4538bcc51ca00c339d001133c8 9557 bp1001spk_01A_raster_data.mat
6b382dc93b33f7688253195eeb0ee02002824689f047e0d39160ebe022198887 10728 bp1001spk_02A_raster_data.mat
53d388364177b7a309385a6a7e272e0d932fdcfbaf7ec554442f6c520d664876 13597 bp1001spk_03A_raster_data.mat
4ead8d84f10ad8383e833323aa239a4a274334a58a703e48281eb3cdb39eb111 6539 bp1001spk_04A_raster_data.mat
49bd67a334d5ce5c47a2026b280f52d2bed958e442e10a7c4cab5fa4257f1684 12084 bp1002spk_01A_raster_data.mat
408c161c39515ce8697a08ddb9dbe126cd1574f279cf2de93d01e83599a992d7 14411 bp1002spk_02A_raster_data.mat
09551b375005ab4392848ac538008268b448960c6506156068a2af5b0fc725bb 11365 bp1002spk_03A_raster_data.mat
d2cdc98c2c0d120a9a606d865f5e0e8aef99a635f445b19f1bf0601428f7db63 15253 bp1002spk_04A_raster_data.mat
7dfb5110109a51e3ea7bea0af27896d88455fe1cfbdb0707be8a0c0505ccd937 13707 bp1003spk_01A_raster_data.mat
152b4984c8260c048d2264d65c84a89380c4aee578c535c934d2d9d7c61cd401 12191 bp1003spk_02A_raster_data.mat
eee1188f104b7e4b4d94f916f28aced2f1a2aecda9052747d93414f81ec7c50a 6992 bp1003spk_03A_raster_data.mat
f367ecf52af31fd675b5dfb76d729cd0b139bf9c29dcaca85e2e3cd791630f2b 8646 bp1003spk_03B_raster_data.mat
eb11e5ae2866249ed0d00fdeec2c08f0c044a35740adac11ca184430291fc2b3 13584 bp1003spk_04A_raster_data.mat
ab8360a04a8461d20c77e9f495f9153b01cfb895d4a004aa868a6a822d4cb066 11038 bp1003spk_04B_raster_data.mat
894ae906bbff3717708deb7171d7b7ec7052b1364a3169fede65434ccd3de043 12429 bp1004spk_01A_raster_data.mat
53474a6f252b716167acebaf6c07508c05eaf610f3dcb04d42a1653cb00468c4 8957 bp1004spk_02A_raster_data.mat
7610652e737bf295db39c27566f60ded8c12747000ad3e72feb65dea65f6c8f9 13537 bp1004spk_03A_raster_data.mat
ba941466f661bebe89a5bafab9bcafe23fd432fcdb3c27b7f3eb019c32530942 16396 bp1004spk_04A_raster_data.mat
460f0b54bb0f1d0795fa75d0962cc671f33c3de60048f96d3e78d1818b07bc6a 13080 bp1004spk_04B_raster_data.mat
79f5ab75ff449ad93ad503a92eb91f92c14b8da71eaf390144a5a07c75a2f23d 19613 bp1005spk_01A_raster_data.mat
778070185aa9b2b4eea09e7f75ebb7c4fd1dfe4f8ec82a35e830e0a339b65dc2 10579 bp1005spk_02A_raster_data.mat
2988e3468c6819f6089da3a1ef83f9aa07749a4dbfb61f1464afb7b13e20cb5b 13490 bp1005spk_03A_raster_data.mat
fa3f8b91c23088916923cef2e39b5523173e7405c304351832be08f79e3dad84 16476 bp1005spk_04A_raster_data.mat
b862f4eecb3e97784ed30dd2033575b15b522f9b907fa7f8aed79d2b9b243c3e 18239 bp1005spk_04B_raster_data.mat
e283225cbd8b6999e86a1764a0f949c90d28cfe65993b5de181a1ad8c3c32b8e 24288 bp1005spk_04C_raster_data.mat
cca1bf12a4454505068b62b03e713a1a703b69a50338c6fd047d4cac6f91ea83 20616 bp1006spk_01A_raster_data.mat
fff16a4f4ed3af4960827e024bd1270c96095e0e9acc45b3eaafbd591deba15b 9920 bp1006spk_02A_raster_data.mat
474cb28d95ef47cc7ba57a53e669770f16b27b7b4712ac7c4f886754ed4e3975 7818 bp1006spk_02B_raster_data.mat
8995e983fc5828f81feae006a57cd2619e0fb8c9a74de25de1ff25a312523305 20039 bp1006spk_03A_raster_data.mat
aec8336afff3c620644a44fa0c223a1017126223087007f9d6487c9efb8e20bb 8705 bp1006spk_03B_raster_data.mat
b6a5e5424bd3e716279c4357911ea39b4e388443adfc9fa3e5a6bdf87385f877 10417 bp1006spk_04A_raster_data.mat
eb5e0b280788c68aee9c61cd0009b3dbfac3790ee46cc5accc82147d52abf41c 14150 bp1006spk_04B_raster_data.mat
fcf2baac8d7da8a67cb0f1fc4828895e0c704dccbef584dd6f72df78f5206fae 16556 bp1007spk_01A_raster_data.mat
41ffa49dc498669a772315905171cafeb754eafca777d41dd5db54c2af6e7e63 24063 bp1007spk_02A_raster_data.mat
98351c0f5c016aefd876aecc976125bc9879cf4a3281e8f5afa8cefed586b982 19273 bp1007spk_03A_raster_data.mat
41521bbcae1976360c5754d10933f4bc4a737548898e86d4999fed45503696cc 22293 bp1007spk_04A_raster_data.mat
64d8973229d5e2b1659dda726577b43d3afc2f0030f3dbd46484e2b62c4bc732 14798 bp1007spk_04B_raster_data.mat
80403ef8d4b61938687cbaed5aa3e656029d44406b4c33eb713596bd1d67ec63 13406 bp1008spk_01A_raster_data.mat
23f36ee1ec2ad18d649202a20395e0f6a0639add87d09d3e170a031c2a1e31bb 6177 bp1008spk_02A_raster_data.mat
c9bd96fe1cd400f3089c1b470afc41e7bde68091c663657da55e80c18eb28fdf 11525 bp1008spk_02B_raster_data.mat
da37cc5b9ac9b1f633beacaf2579fec4bb848746237f5e166c5c6a11e6c2f872 10375 bp1008spk_03A_raster_data.mat
3725d32e3f1b6984bde856f1ff38d8d962424749bfc401162b25a2dc48f0f8b7 14415 bp1008spk_04A_raster_data.mat
93e816bed66a7f39c416878a2bfb1242012ab9742f24385133130891fff9115b 17894 bp1009spk_01A_raster_data.mat
92cbffd05ccb3d60094f16b2d9b67c7dcb862eb3518528dd98bf52c443e7ae55 13046 bp1009spk_02A_raster_data.mat
e687f91acd322227ef8b0c249b7d5263ae8ba62ae1febb2409e1add61e4be018 16194 bp1009spk_02B_raster_data.mat
3b769f1b4d74ffef13ea82258e2734d4d28df884724fcbfa1d337a7a96616e5a 14786 bp1009spk_03A_raster_data.mat
aff0b5ad0151c65d57aebb466747488a754027b6b38dbb5d2c7d30c171774bf8 19227 bp1009spk_04A_raster_data.mat
41af4f25e11c346283a2fc65aa3535cadf7006ce14167ce33428b4fec2153d7a 25470 bp1009spk_04B_raster_data.mat
c11ff95226a604d059cd72767f7960f49c1e038eb2ea72a00536fab2b5419348 16284 bp1010spk_01A_raster_data.mat
8617f79721922a438dea98b43e9465de67c2e5e2b61ffb69f01e9ea9cc65e2d1 18451 bp1010spk_01B_raster_data.mat
05c46b306d0c131be06d851c0c209acaec175cf621a7d91686c5a0289c6fd268 18491 bp1010spk_02A_raster_data.mat
db50f9c6fef21c4c1bc9a511644e5bc328a7dcd6655b88b53e9958a07471bf72 8043 bp1010spk_02B_raster_data.mat
298e27b2a2431b19f15aba5cf7ac32e8c169c770c7cf56b137e59fec92841f43 17149 bp1010spk_03A_raster_data.mat
b805c3184e5a4e66a5414806979cec97004582ba44545d271594cbe0edefa996 22260 bp1010spk_04A_raster_data.mat
5e48defbe8b862f00a22562713a80f062bb700425782ceb5105100798c527441 10600 bp1011spk_01A_raster_data.mat
252cac8b735a9913d3637e4b7b5c5d19a70d6ac554685075c433179ce89877b7 9965 bp1011spk_01B_raster_data.mat
dfc752f5753a5051194e59364dcc7b6866cc4361a112c459e85ecd005fa9fff1 16372 bp1011spk_02A_raster_data.mat
5826e840453b6726b16822a09c80fbadcf881b62b1b2272182ccffb53f224dd0 14295 bp1011spk_03A_raster_data.mat
267d1af33e74d0f14ccdf46a756f29b3a5e588daa0384a1f630d5eb544201ffe 30641 bp1011spk_04A_raster_data.mat
a991fb5b8d32797612632189eff98f244aab8bb312312634d404a278b467a254 15742 bp1012spk_01A_raster_data.mat
2f16f75b0a4df00f9436655b40470c5937bf1413923d548ce72109ea57a7a062 12012 bp1012spk_02A_raster_data.mat
a5691be1cc71c9ed5addc9a9da0a4f4d72bc0025a7a8c3d784d24e8af89a0bd1 13445 bp1012spk_03A_raster_data.mat
0fd57bcfd0f9f398cef69dd773413d499b152f378713d52041c2a125c535ed8a 5749 bp1012spk_03B_raster_data.mat
89f31d061dce46d8a778428f594d5c06cf5c77f24480cdd9d5e2674f1b2b30d2 15799 bp1012spk_04A_raster_data.mat
c39c9198a0cff3f4a73d9fdc30e93e478a075a4e6b34ffbb11bda2cf576dc1bc 9124 bp1013spk_01A_raster_data.mat
9b87006f133e8eb9af1816423104a48e656b4975a93d61b71419fcd81ba00651 13785 bp1013spk_01B_raster_data.mat
44953eae98bc292f56799800051bac182502c380b3d0015a30a031af400f916a 12391 bp1013spk_02A_raster_data.mat
29f5101230efda1ca0a3eecbdfe9e5f75e57ba158244db9bd62c098e08679f02 15157 bp1013spk_03A_raster_data.mat
3af40d9a5236166199724086ec47bd5d98a10b500f9b4745a0c145af6b1b63d0 19527 bp1013spk_04A_raster_data.mat
618584e822704cc91b0e005dde2dcca4f55214f45c2778bf239e273a95630995 9470 bp1014spk_01A_raster_data.mat
2fe7e0d11d8b569b933aa32b8e67681119cb43ced56a0f94747fd74b5b3c9ec9 18662 bp1014spk_01B_raster_data.mat
5b1441ddd4e0fae6582d5d4134302f0156774bbf4477c40e76c0c5fee667c888 17902 bp1014spk_02A_raster_data.mat
b25985d11a42c84160722006955aa03b12ccb421e71a4a23eda1a94c61119891 9190 bp1014spk_02B_raster_data.mat
d56d276601d0442d94ded73de2b8fcfe2dfa304ad45a4c722468b0db73349bbb 36040 bp1014spk_03A_raster_data.mat
c364de8a1a548dc86427a901374a007284ab7769eb1019aac4673015e786467d 20075 bp1014spk_04A_raster_data.mat
d9dab4807b0d11de43b8aaa4314e1eb1f943b11658ae7937a5c16415b917db84 7844 bp1015spk_01A_raster_data.mat
f8d6fe86709408535ba4175cd4dff2449f9a2cc9dbc817bcf24173316b0efef3 10611 bp1015spk_01B_raster_data.mat
24a9e775189734f8aa8d2e63e598b42c5e17e582ca4ec8e7f1b74cb805189b3d 7543 bp1015spk_01C_raster_data.mat
fd4468024bda98ceac025289b4676a0c0bbbb397747d2a809ed0a3c34f12f2ce 10970 bp1015spk_02A_raster_data.mat
75cc2060fa9dc86703b2c8ec8df2737dc64606915d29dc29a4497adf53e997f3 10687 bp1015spk_02B_raster_data.mat
3009644a6011e4120dcff1ce3eeaf6bf12abb44d5852432f605feb0de8357fd6 16651 bp1015spk_03A_raster_data.mat
25a9c533cb0c2d977c8546d74f62e3805d5795deb00f927734e0fd677152b15f 7024 bp1015spk_04A_raster_data.mat
20519f7de363c4d89833e54174c830a669424f65c93dbcff1615c7ba068ecf40 8559 bp1015spk_04B_raster_data.mat
7153eefe83c52df9a399af1e13b3f9ae5eaf32f5229fbaf17f898d3c16977527 17760 bp1015spk_04C_raster_data.mat
3afecc3953e8bc589906e74106adb9ae813c59860c673e9eb95e2768027832eb 7291 bp1016spk_01A_raster_data.mat
a752b66b08974ae5052c6391531e68ed55c2438f2330516010553c809ae5dfb2 14944 bp1016spk_01B_raster_data.mat
d21fdf5a975d31113d4e77dcf10a6344e958084e10705e551e71bae0645b1abc 17885 bp1016spk_02A_raster_data.mat
a418859efb52a698bed6184dcb4d63f201b9256c6fc9ca178c1958102ba5ff69 10949 bp1016spk_03A_raster_data.mat
6c3c67fd729e14209b569ac318898b366f7cb7d4929176a88fb6438b522d8159 15946 bp1016spk_03B_raster_data.mat
c2aa9697337e60d2009dd3a526f5b1a71d71feff9c0b195a0ee29b4263e04808 17072 bp1016spk_04A_raster_data.mat
e2eff1c5d041d40617ba2e9de5a414a49f1c236851dbbc4d5eb7075ac9cfd8f2 7300 bp1017spk_01A_raster_data.mat
730d40536716b4ed2d24dca60ca671270b4c9c3f48f63b77fb46dd4e8a63b976 11151 bp1017spk_01B_raster_data.mat
eda2800ffc87a0661aea0e7b1dc891b936644448358d442b889e5ab795e21c8b 10868 bp1017spk_02A_raster_data.mat
805b4697c504b1335873565fc98a04bdbefb12a074e8c2232be938b1c81a2490 11077 bp1017spk_02B_raster_data.mat
45b2be8224d36bf30315cc431ade8c1a6d2fcedbdc1245cb27dc3332c67cd6e8 14829 bp1017spk_03A_raster_data.mat
2838bacd7a00f09cb661111247af33563a64e5edc38f0c2bc4a8382776b6aa8d 15782 bp1017spk_03B_raster_data.mat
0f781010f674aa872ce2a028e0386ebb8dbb5c997cceb286f1ab656466b41e45 23385 bp1017spk_04A_raster_data.mat
70f39d51c65f9f0f5228e0c29aaa1cbefc28f42a03f34005a5134cebc2da2472 14345 bp1018spk_01A_raster_data.mat
08b00d851892ac4492e9e0f3b33712d01c102618458be81941bb4c8b8151a752 26956 bp1018spk_01B_raster_data.mat
98f7763b5d6150df3f1774d4a6ddd0960c6ddb5fa21bf2c8477a64be350102fe 12519 bp1018spk_01C_raster_data.mat
a11c6752ffc0b578f31e4c8f7735ed2ddffe9dac16efb334afefdbb3a7d5d724 21421 bp1018spk_01D_raster_data.mat
28f57c3005cde3b335468b4eb7b8b26ee4d15292bcbb55433f7ed265dc77d8f7 9344 bp1018spk_02A_raster_data.mat
e2e46de7361cbf2ecca3018a3b4bdd49fd895d9e6155c44f71ebcd3692eb3852 10164 bp1018spk_02B_raster_data.mat
878d18cc62813597cb723f12d27f604177632767bc76bb12890f31cb49456e36 12988 bp1018spk_03A_raster_data.mat
edd9f2b4b89bd005a0124daafca87de2d92296b2a2f283522ce624ee874dcf55 9802 bp1018spk_03B_raster_data.mat
c33c9c69ca1e4bed8ca53e822dd9a24a35e1eefead0314908d37059ff21905fd 16782 bp1018spk_03C_raster_data.mat
f7cf164cc3ad5d5885e0f9fa8742608e25806889aabc64f2d1c4bde4e99a5d87 13639 bp1018spk_04A_raster_data.mat
c1ce2b59e35ccec7d313e7b17e218cd64a61de82e5f02a74117ae5fade57d4e3 23016 bp1018spk_04B_raster_data.mat
ab679ed7325153264061e6691826401d91ea2db10cd8d2933bbba668d54a4109 8049 bp1019spk_01A_raster_data.mat
aa814c9ea1e125f176d3063c3fee6ac9e17d15ebe23a91fd0af3b90d834c596d 17399 bp1019spk_01B_raster_data.mat
e9567eb2b01e77c8eda1692e83a6cb343d89db0c6ca8ac28e8cb34ba73a73cc7 9297 bp1019spk_02A_raster_data.mat
e70db98ba279e79d979f64445633464f69fc6c7c352843d2b3126c508fd20392 12737 bp1019spk_02B_raster_data.mat
81dc9271e7a81ccf06c01d1d018293d6709f3d606b1d96c1b5b9ced54e7850bb 11581 bp1019spk_02C_raster_data.mat
7200ac85de94a95abefc114be8af10b63557478ecb752b10af8e56295cf15dc7 14795 bp1019spk_03A_raster_data.mat
a2e0445939f65b66485e9df08e7a9809e316de201b6343a3324c091de0c1f56d 12153 bp1019spk_04A_raster_data.mat
288d1857a9df85ad4e83c3897ea0528b1ae44ce76336cf7ef071ffd3bb7ac823 16458 bp1019spk_04B_raster_data.mat
a46d627223385a2c57f4642d2174f2e8788312eb033661af7e4e9a0f25b743f1 9195 bp1020spk_01A_raster_data.mat
9653474d0fa78787fc7ec2ae5dca433cc9a5f8160836828e93632a55b4bbd3fb 10938 bp1020spk_01B_raster_data.mat
01a6144ae9b7303da80e819af667729ca570c0148b26dd70eda495b7fe88a4d0 13828 bp1020spk_02A_raster_data.mat
aa83c7da37207e95636f8d50c3d45db698266e71b9868016d6f5a64163e8282b 18653 bp1020spk_02B_raster_data.mat
54097b9d516a44d2ba42e8162b0cc1feb97ccfd546dd6a3abcf79b05ddfa3f6c 9729 bp1020spk_03A_raster_data.mat
747da1f2d06551da822b000062671b5adf9199a36116786c6dbfec788d36dee2 11480 bp1020spk_03B_raster_data.mat
a5e67c4700f446e4f2fff5ff9ebdabea9c5522c934609375910aee5368702e92 7897 bp1020spk_03C_raster_data.mat
165150b6c6c929fd012f3baff27a2b3b257ddb630a5fb6986634b636c0df7e8c 11655 bp1020spk_04A_raster_data.mat
8300e382bf2d472dbcaa8f76da92a345bcda4fa521b1fcc6a8c78fbd5513f429 17804 bp1021spk_01A_raster_data.mat
8e76c165519fb9985ff4f26473b01daf918c4117e030c998e0a2544cb3736b1d 15758 bp1021spk_02A_raster_data.mat
d5bba8e1349988bff91f38fedead828a602470643895bee7ed8dff115a2ce3d5 8190 bp1021spk_03A_raster_data.mat
38839d314b22b8cea2f1c0f033b14ce670a5ae3f6a67951619660e3f15e271ab 16071 bp1021spk_03B_raster_data.mat
b97033f381df1e219d286938134d9e2231af0578a0f93cb4e59ec3a712dcc138 14516 bp1021spk_03C_raster_data.mat
b70394133d5e3b6b6ad531dc816dd942e8eb4fa5b08874fba92c6b24608d39ab 8906 bp1021spk_04A_raster_data.mat
c2533a86b052e9f276bada89f533499afa3e7d767cd31e946220ff9b6e0d1df3 17179 bp1021spk_04B_raster_data.mat
ea92d05410fdd10df5e55e66b6e66a96383c2eb7590227c4bc61830e2135cbdf 13623 bp1021spk_04C_raster_data.mat
"""

REGISTRY: dict[str, DataEntry | DandiEntry] = _build_registry()
