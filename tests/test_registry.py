"""The real-data registry: verified use of a pre-filled read-only cache, and offline downloads.

Downloads are exercised against a tiny HTTP server on 127.0.0.1 in a thread; no test touches
the network.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from mini_decoders.data import registry
from mini_decoders.data.registry import (DandiEntry, DataEntry, RemoteFile, cache_dir, fetch, fetch_dandi,
                                         fetch_file, get_entry, names, verify_file)
from mini_decoders.errors import DataError, DownloadError

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"{REALDATA} not present")


# ----------------------------------------------------------------------------- registry contents
def test_registry_names_and_kinds():
    assert names(DataEntry) == ["yu2009_pmd", "golub2018_bci", "zhang_desimone_it", "pynapple_nwb"]
    assert set(names(DandiEntry)) == {"mc_maze", "mc_maze_small", "mc_maze_medium", "mc_maze_large", "mc_rtt",
                                      "area2_bump"}
    assert len(get_entry("yu2009_pmd").files) == 2
    assert len(get_entry("zhang_desimone_it").files) == 132
    for name in names(DataEntry):
        entry = get_entry(name)
        assert entry.licence and entry.citation and entry.description
        for remote in entry.files:
            assert remote.url.startswith("https://raw.githubusercontent.com/")
            assert remote.url.split("/")[5] and len(remote.url.split("/")[5]) == 40  # pinned by commit
            assert len(remote.sha256) == 64 and remote.size > 0


def test_dandi_entries_are_versioned():
    dandisets = {"mc_maze": "000128", "mc_maze_large": "000138", "mc_maze_medium": "000139",
                 "mc_maze_small": "000140", "mc_rtt": "000129", "area2_bump": "000127"}
    for name, dandiset in dandisets.items():
        entry = get_entry(name)
        assert entry.dandiset == dandiset
        assert entry.url == f"DANDI:{dandiset}/{entry.version}"
        assert entry.version.count(".") == 2 and entry.version[0] == "0"  # a published version, not "draft"
    assert get_entry("mc_maze_small").url == "DANDI:000140/0.220113.0408"


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match="unknown dataset 'nope'.*yu2009_pmd.*mc_maze_small"):
        fetch("nope")


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINI_DECODERS_DATA", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("MINI_DECODERS_DATA")
    assert cache_dir() == Path("~/.cache/mini_decoders").expanduser()


def test_fetch_dandi_dry_run_downloads_nothing(tmp_path):
    assert fetch_dandi("mc_maze_small", tmp_path, dry_run=True) == []
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="not a DANDI set"):
        fetch_dandi("yu2009_pmd", tmp_path, dry_run=True)


# ----------------------------------------------------------------------------- the pre-filled, read-only cache
@needs_realdata
def test_every_small_file_verifies_in_shared_cache(monkeypatch):
    monkeypatch.setenv("MINI_DECODERS_DATA", str(REALDATA))
    before = {p: p.stat().st_mtime_ns for p in REALDATA.rglob("*")}
    for name in names(DataEntry):
        paths = fetch(name)  # cache from the environment
        entry = get_entry(name)
        assert paths == [REALDATA / remote.path for remote in entry.files]
        assert all(verify_file(path, remote) for path, remote in zip(paths, entry.files))
    assert {p: p.stat().st_mtime_ns for p in REALDATA.rglob("*")} == before  # nothing written or touched


@needs_realdata
def test_verification_is_hashed_once_per_process(monkeypatch):
    fetch("zhang_desimone_it", REALDATA)
    calls = []
    monkeypatch.setattr(registry.hashlib, "sha256", lambda *a: calls.append(1) or hashlib.sha256(*a))
    fetch("zhang_desimone_it", REALDATA)
    assert calls == []


# ----------------------------------------------------------------------------- downloads from a local server
class _Server:
    """A threaded HTTP server on 127.0.0.1 serving ``folder``; ``mode`` makes it misbehave."""

    def __init__(self, folder: Path, mode: str = "ok"):
        self.hits = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.hits += 1
                if mode == "fail":
                    self.send_error(503, "always down")
                elif mode == "hang":
                    time.sleep(3)
                elif mode == "truncate":  # promise the whole file, send 10 bytes, hang up
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                    self.close_connection = True
                else:
                    super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    """A folder with one 100 kB file, and the file's RemoteFile description (URL filled in per test)."""
    folder = tmp_path / "remote"
    folder.mkdir()
    payload = os.urandom(100_000)
    (folder / "blob.bin").write_bytes(payload)
    remote = RemoteFile("set/blob.bin", "", hashlib.sha256(payload).hexdigest(), len(payload))
    return folder, remote, payload


def test_download_verifies_and_lands_atomically(served, tmp_path):
    folder, remote, payload = served
    cache = tmp_path / "cache"
    with _Server(folder) as server:
        remote = remote._replace(url=server.url("blob.bin"))
        path = fetch_file(remote, cache, timeout=5, retries=0)
        assert path == cache / "set" / "blob.bin" and path.read_bytes() == payload
        assert [p.name for p in path.parent.iterdir()] == ["blob.bin"]  # no temp file left behind
        assert fetch_file(remote, cache, timeout=5, retries=0) == path  # second call: cached, no request
        assert server.hits == 1


def test_file_url_download(served, tmp_path):
    folder, remote, payload = served
    path = fetch_file(remote._replace(url=(folder / "blob.bin").as_uri()), tmp_path / "cache", retries=0)
    assert path.read_bytes() == payload


def test_wrong_checksum_raises_and_leaves_nothing(served, tmp_path):
    folder, remote, _ = served
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with _Server(folder) as server:
        bad = remote._replace(url=server.url("blob.bin"), sha256=wrong)
        with pytest.raises(DownloadError) as caught:
            fetch_file(bad, cache, timeout=5, retries=3)
        assert server.hits == 1  # a mismatch is not retried
    message = str(caught.value)
    assert "set/blob.bin" in message and f"expected sha256 {wrong}" in message
    assert f"found sha256 {remote.sha256}" in message
    assert list((cache / "set").iterdir()) == []


def test_corrupt_cached_file_is_redownloaded_when_writable(served, tmp_path):
    folder, remote, payload = served
    cache = tmp_path / "cache"
    (cache / "set").mkdir(parents=True)
    (cache / "set" / "blob.bin").write_bytes(b"x" * remote.size)  # right size, wrong bytes
    with _Server(folder) as server:
        path = fetch_file(remote._replace(url=server.url("blob.bin")), cache, timeout=5, retries=0)
    assert path.read_bytes() == payload


def _make_read_only(folder: Path, monkeypatch) -> None:
    for path in [*folder.rglob("*"), folder]:
        path.chmod(stat.S_IRUSR | stat.S_IXUSR if path.is_dir() else stat.S_IRUSR)
    if os.geteuid() == 0:  # root ignores permission bits; make the registry see what a user would
        monkeypatch.setattr(registry, "_folder_is_writable", lambda folder: False)


def test_read_only_cache_with_verified_file_is_used_in_place(served, tmp_path, monkeypatch):
    _, remote, payload = served
    cache = tmp_path / "cache"
    (cache / "set").mkdir(parents=True)
    (cache / "set" / "blob.bin").write_bytes(payload)
    _make_read_only(cache, monkeypatch)
    before = (cache / "set" / "blob.bin").stat()
    unreachable = remote._replace(url="http://127.0.0.1:9/never")  # any request would fail the test
    path = fetch_file(unreachable, cache, timeout=1, retries=0)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in (cache / "set").iterdir()) == ["blob.bin"]


def test_read_only_cache_with_corrupt_file_says_so(served, tmp_path, monkeypatch):
    _, remote, _ = served
    cache = tmp_path / "cache"
    (cache / "set").mkdir(parents=True)
    (cache / "set" / "blob.bin").write_bytes(b"corrupt")
    _make_read_only(cache, monkeypatch)
    with pytest.raises(DownloadError, match=r"corrupt.*expected size 100000.*read-only"):
        fetch_file(remote._replace(url="http://127.0.0.1:9/never"), cache, timeout=1, retries=0)


def test_server_error_is_retried_then_fails(served, tmp_path, monkeypatch):
    folder, remote, _ = served
    monkeypatch.setattr(registry, "_BACKOFF_S", 0.01)
    with _Server(folder, mode="fail") as server:
        with pytest.raises(DownloadError, match=r"after 3 attempt\(s\).*HTTP 503"):
            fetch_file(remote._replace(url=server.url("blob.bin")), tmp_path / "cache", timeout=1, retries=2)
        assert server.hits == 3
    assert list((tmp_path / "cache" / "set").iterdir()) == []


def test_truncated_transfer_is_retried_and_leaves_nothing(served, tmp_path, monkeypatch):
    folder, remote, _ = served
    monkeypatch.setattr(registry, "_BACKOFF_S", 0.01)
    with _Server(folder, mode="truncate") as server:
        with pytest.raises(DownloadError, match=r"after 2 attempt\(s\).*truncated after 10 of 100000 bytes"):
            fetch_file(remote._replace(url=server.url("blob.bin")), tmp_path / "cache", timeout=1, retries=1)
        assert server.hits == 2
    assert list((tmp_path / "cache" / "set").iterdir()) == []


def test_missing_file_is_not_retried(served, tmp_path):
    folder, remote, _ = served
    with _Server(folder) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch_file(remote._replace(url=server.url("missing.bin")), tmp_path / "cache", timeout=1, retries=2)
        assert server.hits == 1


def test_timeout_is_retried_then_fails(served, tmp_path, monkeypatch):
    folder, remote, _ = served
    monkeypatch.setattr(registry, "_BACKOFF_S", 0.01)
    started = time.monotonic()
    with _Server(folder, mode="hang") as server:
        with pytest.raises(DownloadError, match=r"after 3 attempt\(s\) \(timeout 0.5 s\)"):
            fetch_file(remote._replace(url=server.url("blob.bin")), tmp_path / "cache", timeout=0.5, retries=2)
        assert server.hits == 3
    assert time.monotonic() - started < 10


class _SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a stuck proxy, a dead mirror)."""

    def __init__(self):
        import socket

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.held, self.stopped = [], threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                continue

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        for connection in self.held:
            connection.close()
        self.listener.close()


def _outcome(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as error:  # handed back to the test thread
        return error


def test_a_server_that_never_answers_gives_up_within_the_time_limit(served, tmp_path, monkeypatch, capsys):
    _, remote, _ = served
    monkeypatch.setenv("MINI_DECODERS_FETCH_TIMEOUT", "10")
    with _SilentServer() as server:
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(result=_outcome(
            fetch_file, remote._replace(url=server.url("blob.bin")), tmp_path / "cache")), daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(60)
        elapsed = time.monotonic() - started
        assert not thread.is_alive(), "the download was still waiting after 60 s"
    error = outcome["result"]
    assert isinstance(error, DownloadError), error
    assert elapsed < 30
    assert f"no answer from 127.0.0.1:{server.port} within" in str(error)
    assert "gave up after 10 s (MINI_DECODERS_FETCH_TIMEOUT or --timeout)" in str(error)
    assert f"waiting for 127.0.0.1:{server.port} to send set/blob.bin (gives up after 10 s)" in capsys.readouterr().err
    assert list((tmp_path / "cache" / "set").iterdir()) == []


def test_data_fetch_timeout_option_bounds_each_file(served, tmp_path, monkeypatch, capsys):
    from mini_decoders.cli import main

    _, remote, _ = served
    monkeypatch.delenv("MINI_DECODERS_FETCH_TIMEOUT", raising=False)
    with _SilentServer() as server:
        entry = DataEntry("silent_set", (remote._replace(url=server.url("blob.bin")),), "none", "none", "test")
        monkeypatch.setitem(registry.REGISTRY, "silent_set", entry)
        started = time.monotonic()
        code = main(["data", "fetch", "silent_set", "--cache", str(tmp_path / "cache"), "--timeout", "1"])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10, (code, elapsed, err)
    assert "waiting for 127.0.0.1" in err and "(gives up after 1 s)" in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "gave up after 1 s" in error_lines[0] and "Traceback" not in err


def test_bad_fetch_timeouts_are_refused(monkeypatch):
    monkeypatch.setenv("MINI_DECODERS_FETCH_TIMEOUT", "soon")
    with pytest.raises(DataError, match=r"MINI_DECODERS_FETCH_TIMEOUT must be a number of seconds > 0, got 'soon'"):
        registry.fetch_timeout()
    with pytest.raises(DataError, match=r"--timeout must be a number of seconds > 0, got -1"):
        registry.fetch_timeout(-1)


def test_corrupt_cached_copy_and_no_network_says_the_copy_is_corrupt(served, tmp_path):
    _, remote, _ = served
    cache = tmp_path / "cache"
    (cache / "set").mkdir(parents=True)
    (cache / "set" / "blob.bin").write_bytes(b"corrupt")
    with pytest.raises(DownloadError, match=r"could not download set/blob.bin.*; the cached copy .*blob.bin is "
                                            r"corrupt \(expected size 100000.*found size 7"):
        fetch_file(remote._replace(url="http://127.0.0.1:9/never"), cache, timeout=1, retries=0)
    assert (cache / "set" / "blob.bin").read_bytes() == b"corrupt"  # left for the user to inspect


# ----------------------------------------------------------------------------- DANDI and the scripts
def test_fetch_dandi_calls_client_with_versioned_url(tmp_path, monkeypatch):
    import dandi.download

    calls = []

    def fake_download(url, output_dir, **kwargs):  # what the client would write for a dandiset URL
        calls.append((url, Path(output_dir)))
        asset = Path(output_dir) / "000140" / "sub-Jenkins" / "sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb"
        asset.parent.mkdir(parents=True)
        asset.write_bytes(b"nwb")

    monkeypatch.setattr(dandi.download, "download", fake_download)
    paths = fetch("mc_maze_small", tmp_path)
    assert calls == [("DANDI:000140/0.220113.0408", tmp_path / "dandi")]
    assert [p.name for p in paths] == ["sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb"]
    assert fetch_dandi("mc_maze_small", tmp_path, dry_run=True) == paths


def test_fetch_dandi_client_failure_is_a_download_error(tmp_path, monkeypatch):
    import dandi.download

    def failing_download(url, output_dir, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(dandi.download, "download", failing_download)
    with pytest.raises(DownloadError, match=r"DANDI download of DANDI:000128/0.220113.0400 .*no route to host"):
        fetch("mc_maze", tmp_path)


def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "data_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"data_scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_nlb_dry_run_is_offline(tmp_path, capsys):
    assert _script("fetch_nlb").main(["--name", "mc_maze_small", "--cache", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DANDI:000140/0.220113.0408" in out and str(tmp_path / "dandi" / "000140") in out
    assert "dry run" in out and list(tmp_path.iterdir()) == []


@needs_realdata
def test_fetch_small_prints_table_from_shared_cache(capsys):
    assert _script("fetch_small").main(["--cache", str(REALDATA)]) == 0
    out = capsys.readouterr().out
    assert "zhang_desimone_it  132" in out and "BSD-3-Clause" in out
