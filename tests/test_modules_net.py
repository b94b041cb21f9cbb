"""get_url, uri, wait_for against HTTP servers and ports on 127.0.0.1, run on the host over SSH."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest
from httpserver import LoopbackHTTPServer
from modhelp import run_module



@pytest.fixture
def http():
    with LoopbackHTTPServer() as server:
        yield server


def test_get_url_download_checksum_idempotence(conn, http, tmp_path: Path) -> None:
    data = b"weights" * 50000
    http.files["/model.bin"] = data
    digest = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "model.bin"
    result = run_module(conn, "get_url", url=f"{http.url}/model.bin", dest=str(dest), checksum=f"sha256:{digest}", mode="0600")
    assert result.changed and dest.read_bytes() == data and result.data["checksum_dest"] == digest
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    requests = len(http.requests)
    assert not run_module(conn, "get_url", url=f"{http.url}/model.bin", dest=str(dest), checksum=f"sha256:{digest}").changed
    assert len(http.requests) == requests  # nothing downloaded again
    into_dir = run_module(conn, "get_url", url=f"{http.url}/model.bin", dest=str(tmp_path) + "/")
    assert into_dir.data["dest"] == str(dest)


def test_get_url_resumes_partial_download(conn, http, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    http.files["/big.bin"] = data
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(data[:300000])
    result = run_module(conn, "get_url", url=f"{http.url}/big.bin", dest=str(dest), checksum="sha256:" + hashlib.sha256(data).hexdigest())
    assert result.changed and dest.read_bytes() == data and not (tmp_path / "big.bin.part").exists()
    assert http.requests[-1]["range"] == "bytes=300000-"


def test_get_url_never_downloads_through_a_planted_part_symlink(conn, http, tmp_path: Path) -> None:
    data = b"model bytes " * 1000
    http.files["/m.bin"] = data
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    dest = tmp_path / "m.bin"
    (tmp_path / "m.bin.part").symlink_to(victim)  # the predictable part name, planted before the download
    result = run_module(conn, "get_url", url=f"{http.url}/m.bin", dest=str(dest), checksum="sha256:" + hashlib.sha256(data).hexdigest())
    assert result.changed and dest.read_bytes() == data and not dest.is_symlink()
    assert victim.read_bytes() == b"do not touch"


def test_get_url_checksum_mismatch_leaves_no_file(conn, http, tmp_path: Path) -> None:
    http.files["/x"] = b"corrupt"
    dest = tmp_path / "x"
    result = run_module(conn, "get_url", url=f"{http.url}/x", dest=str(dest), checksum="sha256:" + "0" * 64)
    assert result.failed and "checksum mismatch" in result.msg
    assert not dest.exists() and not (tmp_path / "x.part").exists()
    missing = run_module(conn, "get_url", url=f"{http.url}/nope", dest=str(tmp_path / "nope"))
    assert missing.failed and not (tmp_path / "nope").exists()


def test_get_url_fails_when_owner_or_mode_cannot_be_set(conn, http, tmp_path: Path) -> None:
    http.files["/o"] = b"o"
    dest = tmp_path / "o"
    fresh = run_module(conn, "get_url", url=f"{http.url}/o", dest=str(dest), owner="no-such-user-glmops")
    assert fresh.failed and not fresh.changed and "setting owner on" in fresh.msg and dest.read_bytes() == b"o"
    again = run_module(conn, "get_url", url=f"{http.url}/o", dest=str(dest), mode="u+nonsense")
    assert again.failed and "setting mode on" in again.msg
    checked = run_module(conn, "get_url", url=f"{http.url}/o", dest=str(dest), mode="0600", check=True, diff=True)
    assert checked.changed and not checked.failed and [d.after for d in checked.diff] == ["mode: 0600\n"]
    assert oct(dest.stat().st_mode & 0o777) != "0o600"


def test_get_url_check_mode(conn, http, tmp_path: Path) -> None:
    http.files["/c"] = b"c"
    result = run_module(conn, "get_url", url=f"{http.url}/c", dest=str(tmp_path / "c"), check=True)
    assert result.changed and not (tmp_path / "c").exists() and not http.requests


def test_uri(conn, http) -> None:
    ok = run_module(conn, "uri", url=f"{http.url}/status/200")
    assert ok.data["status"] == 200 and ok.data["json"] == {"status": 200} and not ok.changed
    posted = run_module(conn, "uri", url=f"{http.url}/echo", method="POST", body={"a": 1}, body_format="json",
                        url_username="u", url_password="p-secret", return_content=True)
    assert posted.data["json"]["body"] == '{"a": 1}' and posted.data["json"]["auth"].startswith("Basic ")
    assert "p-secret" not in posted.data["url"]
    bad = run_module(conn, "uri", url=f"{http.url}/status/503")
    assert bad.failed and "503" in bad.msg
    assert not run_module(conn, "uri", url=f"{http.url}/status/503", status_code=[200, 503]).failed
    down = run_module(conn, "uri", url="http://127.0.0.1:1/", timeout=2)
    assert down.failed and "failed" in down.msg


def test_wait_for_port_and_path(conn, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = socket.socket()

    def open_later() -> None:
        time.sleep(1.0)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    threading.Thread(target=open_later).start()
    result = run_module(conn, "wait_for", port=port, timeout=10, sleep=0.2)
    assert not result.failed and result.data["elapsed"] >= 0
    listener.close()
    assert not run_module(conn, "wait_for", port=port, state="stopped", timeout=5).failed
    timed_out = run_module(conn, "wait_for", port=port, timeout=1, sleep=0.2)
    assert timed_out.failed and "timed out after 1 s" in timed_out.msg
    log = tmp_path / "server.log"
    threading.Timer(0.5, lambda: log.write_text("Uvicorn running on http://127.0.0.1:6006\n")).start()
    assert not run_module(conn, "wait_for", path=str(log), search_regex="Uvicorn running", timeout=10, sleep=0.2).failed
    assert not run_module(conn, "wait_for", path=str(tmp_path / "gone"), state="absent", timeout=2).failed
