"""Two starts at once on one host (two terminals, or one host under two inventory names): the
check-and-start of `_detached.start` holds a lock on the host, so one process is started and the
other run gets it back. Over the real test sshd, with real processes that hold a real port."""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import glmops
from modhelp import run_module
from sshd import free_port

from glmops.connection.factory import open_connection
from glmops.connection.local import LocalConnection
from glmops.layout import Layout
from glmops.modules import _detached
from glmops.modules._detached import Paths, build_script

# Holds PORT until killed; MARKER (an argument of its own) finds it among the machine's processes.
SERVER = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(300)"


def _with_marker(marker: str) -> list[int]:
    """Live processes whose argv holds `marker` as a word."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker.encode() in argv and state != "Z":
                found.append(int(entry))
    return found


def _group_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


def _at_once(count: int, job: Callable[[int], Any]) -> list[Any]:
    """Run job(0..count-1) in threads released together; their results (or exceptions) in order."""
    barrier = threading.Barrier(count)
    out: list[Any] = [None] * count

    def one(i: int) -> None:
        barrier.wait()
        try:
            out[i] = job(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return out


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Markers whose processes are killed after the test, whatever it did."""
    markers: list[str] = []
    yield markers
    for marker in markers:
        for pid in _with_marker(marker):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_two_deploys_at_once_start_one_server_and_stop_finds_it(sshd, tmp_path: Path, cleanup: list[str]) -> None:
    deploy = tmp_path / "glmops"
    layout = Layout(str(deploy))
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"gpu1": {**sshd.hostvars(), "deploy_dir": str(deploy)}}}}))
    for round_ in range(3):  # the race is lost every time without the lock; three rounds make sure
        marker = f"glmops-lock-test-{os.getpid()}-{round_}"
        cleanup.append(marker)
        command = f"exec {sys.executable} -c \"{SERVER}\" {free_port()} {marker}"
        conns = [open_connection("target", sshd.hostvars()) for _ in range(2)]
        for conn in conns:
            conn.connect()
            conn.run("true")  # the remote shell is up: both runs are as quick to look
        try:
            results = _at_once(2, lambda i: run_module(conns[i], "daemon", name="api", command=command, wait=0.5,
                                                       pid_file=layout.pid_file, log_file=layout.log_file))
        finally:
            for conn in conns:
                conn.close()
        assert all(not isinstance(r, Exception) and not r.failed for r in results), [getattr(r, "msg", r) for r in results]
        assert sorted(r.changed for r in results) == [False, True]  # one started it, the other found it running
        attached = next(r for r in results if not r.changed)  # it saw it running, in its look or under the lock
        assert "is running" in attached.msg and not attached.failed
        servers = _with_marker(marker)
        assert len(servers) == 1, f"{len(servers)} servers run"
        recorded = int(Path(layout.pid_file).read_text())
        assert _group_of(servers[0]) == recorded == results[0].data["pid"] == results[1].data["pid"]
        stopped = glmops("stop", "gpu1", "-i", str(inv), "--timeout", "5")
        assert stopped.returncode == 0 and "gpu1: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert _with_marker(marker) == []


def test_a_start_that_finds_one_running_starts_nothing(conn, tmp_path: Path) -> None:
    """What the losing run meets after its look said "not running": the other one, under the lock."""
    paths = Paths(str(tmp_path / "run" / "app.pid"), str(tmp_path / "app.log"))
    other = _detached.start(conn, paths, build_script("exec sleep 300"), wait=0)
    try:
        assert other.running
        again = _detached.start(conn, paths, build_script("exec sleep 301"), wait=0)
        assert again.attached and again.running and again.pid == other.pid and again.script == build_script("exec sleep 300")
        failed = run_module(conn, "daemon", name="app", command="exec sleep 302", **_paths_args(paths), check=False)
        assert failed.changed  # the daemon module's own look sees the running one: a changed command restarts it
    finally:
        _detached.stop(conn, paths, grace=5)


def _paths_args(paths: Paths) -> dict[str, str]:
    return {"pid_file": paths.pid_file, "log_file": paths.log_file}


def _bin_without(tmp_path: Path, *names: str) -> Path:
    """A PATH folder with every program of the usual folders but `names`."""
    bin_dir = tmp_path / ("bin-without-" + "-".join(names))
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name not in names and not (bin_dir / name).exists():
                    (bin_dir / name).symlink_to(os.path.join(folder, name))
    return bin_dir


@pytest.mark.parametrize("without", ["", "perl"], ids=["perl", "flock(1), no perl"])
def test_the_lock_is_honoured_and_a_held_lock_is_reported(tmp_path: Path, without: str) -> None:
    """Hold the host's lock from here: a start waits for it, and names it when it stays taken."""
    local = LocalConnection()
    path = f"{_bin_without(tmp_path, without)}" if without else os.environ["PATH"]

    class Runner:
        def run(self, cmd: str, **kwargs: Any):
            return local.run(cmd, env={"PATH": path}, **kwargs)

    runner = Runner()
    if without:
        assert runner.run("command -v perl || echo none").stdout.strip() == "none"
    paths = Paths(str(tmp_path / "run" / "job.pid"), str(tmp_path / "job.log"))
    os.makedirs(tmp_path / "run")
    with open(paths.lock_file, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OSError, match=f"another start holds the lock {paths.lock_file} for over 1 s"):
            _detached.start(runner, paths, build_script("exec sleep 300"), wait=0, lock_wait=1)
        assert not Path(paths.pid_file).exists()  # nothing was started
        threading.Timer(1.5, lambda: fcntl.flock(held, fcntl.LOCK_UN)).start()
        began = time.monotonic()
        status = _detached.start(runner, paths, build_script("exec sleep 300"), wait=0, lock_wait=30)
        waited = time.monotonic() - began
    try:
        assert status.running and not status.attached and waited >= 1.2  # it waited for the unlock
        with open(paths.lock_file) as again:
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the daemon does not hold it
    finally:
        assert _detached.stop(runner, paths, grace=5).was_running


def test_the_log_is_created_0600_and_the_process_keeps_the_umask(conn, tmp_path: Path) -> None:
    paths = Paths(str(tmp_path / "run" / "api.pid"), str(tmp_path / "logs" / "api.log"))
    status = _detached.start(conn, paths, build_script("umask; exec sleep 300"), wait=0.3)
    try:
        assert status.running
        assert oct(os.stat(paths.log_file).st_mode & 0o777) == "0o600"  # an API key in a query string lands here
        assert _detached.tail(conn, paths.log_file).strip() == conn.run("umask").stdout.strip()
    finally:
        _detached.stop(conn, paths, grace=5)


def test_hub_fetches_at_once_start_one_downloader(sshd, tmp_path: Path) -> None:
    from hubserver import HubServer

    from glmops.modules.model_fetch import fetch_paths, state_dir

    files = {"config.json": b'{"model_type": "tiny"}', "model.safetensors": os.urandom(300 * 1024)}
    for round_ in range(4):  # the runs' probes before the start take varying time: four races
        dest = tmp_path / f"tiny{round_}"
        worker = fetch_paths(state_dir(str(dest))).cmd_file  # every downloader's wrapper has it in its argv
        with HubServer("ZhipuAI/tiny", files) as hub:
            hub.hold = "model.safetensors"
            conns = [open_connection("target", sshd.hostvars()) for _ in range(2)]
            for conn in conns:
                conn.connect()
                conn.run("true")
            outcome: list[Any] = []
            runs = threading.Thread(target=lambda: outcome.extend(_at_once(2, lambda i: run_module(
                conns[i], "model_fetch", source="huggingface", repo="ZhipuAI/tiny", dest=str(dest), endpoint=hub.url,
                python=sys.executable))))
            runs.start()
            try:
                assert hub.holding.wait(60), "no download started"
                time.sleep(0.3)  # a second downloader, if one was started, is up by now
                downloaders = _with_marker(worker)
                assert len(downloaders) == 1, f"{len(downloaders)} downloaders run into {dest}"
            finally:
                hub.release.set()
                runs.join(120)
                for conn in conns:
                    conn.close()
        assert all(not isinstance(r, Exception) and not r.failed for r in outcome), [getattr(r, "msg", r) for r in outcome]
        assert sorted(r.data["attached"] for r in outcome) == [False, True]
        assert (dest / "model.safetensors").read_bytes() == files["model.safetensors"]
