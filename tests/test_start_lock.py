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
from contextlib import contextmanager
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


@contextmanager
def _held_until_waited_for(lock_file: str, waiters: int = 2) -> Iterator[None]:
    """Hold the host's start lock until `waiters` starts wait for it (each after its look found nothing
    running), so that they meet in the start: two runs at once at their worst, every time. Gives up
    waiting after 10 s (a start without the lock never waits)."""
    Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a")
    fcntl.flock(handle, fcntl.LOCK_EX)

    def release() -> None:
        deadline = time.monotonic() + 10
        while len(_with_marker(lock_file)) < waiters and time.monotonic() < deadline:  # perl/flock name the file
            time.sleep(0.02)
        handle.close()

    thread = threading.Thread(target=release)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _deploys_at_once(sshd, layout: Layout, commands: list[str]) -> list[Any]:
    """The daemon task of each command, run at once over connections of their own, meeting in the start."""
    conns = [open_connection("target", sshd.hostvars()) for _ in commands]
    for conn in conns:
        conn.connect()
    try:
        with _held_until_waited_for(_detached.Paths(layout.pid_file, layout.log_file).lock_file, len(commands)):
            return _at_once(len(commands), lambda i: run_module(conns[i], "daemon", name="api", command=commands[i], wait=0.5,
                                                                pid_file=layout.pid_file, log_file=layout.log_file))
    finally:
        for conn in conns:
            conn.close()


def test_two_deploys_at_once_start_one_server_and_stop_finds_it(sshd, tmp_path: Path, cleanup: list[str]) -> None:
    deploy = tmp_path / "glmops"
    layout = Layout(str(deploy))
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"gpu1": {**sshd.hostvars(), "deploy_dir": str(deploy)}}}}))
    marker = f"glmops-lock-test-{os.getpid()}"
    cleanup.append(marker)
    command = f"exec {sys.executable} -c \"{SERVER}\" {free_port()} {marker}"
    results = _deploys_at_once(sshd, layout, [command, command])
    assert all(not isinstance(r, Exception) and not r.failed for r in results), [getattr(r, "msg", r) for r in results]
    assert sorted(r.changed for r in results) == [False, True]  # one started it, the other found it running
    attached = next(r for r in results if not r.changed)
    assert "api is running" in attached.msg and "another run started it just now" in attached.msg
    servers = _with_marker(marker)
    assert len(servers) == 1, f"{len(servers)} servers run"
    recorded = int(Path(layout.pid_file).read_text())
    assert _group_of(servers[0]) == recorded == results[0].data["pid"] == results[1].data["pid"]  # the one on the port
    stopped = glmops("stop", "gpu1", "-i", str(inv), "--timeout", "5")
    assert stopped.returncode == 0 and "gpu1: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert _with_marker(marker) == []


def test_two_deploys_of_different_commands_at_once_one_fails_clearly(sshd, tmp_path: Path, cleanup: list[str]) -> None:
    layout = Layout(str(tmp_path / "glmops"))
    port = free_port()
    markers = [f"glmops-lock-a-{os.getpid()}", f"glmops-lock-b-{os.getpid()}"]
    cleanup.extend(markers)
    results = _deploys_at_once(sshd, layout, [f"exec {sys.executable} -c \"{SERVER}\" {port} {m}" for m in markers])
    assert not any(isinstance(r, Exception) for r in results), results
    started = [r for r in results if r.changed and not r.failed]
    refused = [r for r in results if r.failed]
    assert len(started) == 1 and len(refused) == 1, [r.msg for r in results]
    assert "another run started api with a different command" in refused[0].msg and not refused[0].changed
    assert sum(len(_with_marker(m)) for m in markers) == 1 and Path(layout.pid_file).read_text().strip() == str(started[0].data["pid"])
    _detached.stop(LocalConnection(), _detached.Paths(layout.pid_file, layout.log_file), grace=5)


def test_a_start_that_finds_one_running_starts_nothing(conn, tmp_path: Path) -> None:
    """What the losing run meets after its look said "not running": the other one, under the lock."""
    paths = Paths(str(tmp_path / "run" / "app.pid"), str(tmp_path / "app.log"))
    other = _detached.start(conn, paths, build_script("exec sleep 300"), wait=0)
    try:
        assert other.running
        again = _detached.start(conn, paths, build_script("exec sleep 301"), wait=0)
        assert again.attached and again.running and again.pid == other.pid and again.script == build_script("exec sleep 300")
    finally:
        _detached.stop(conn, paths, grace=5)
        for pid in {other.pid} - {None}:  # whatever the pid file names by now
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass


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
    dest = tmp_path / "tiny"
    paths = fetch_paths(state_dir(str(dest)))
    with HubServer("ZhipuAI/tiny", files) as hub:
        hub.hold = "model.safetensors"
        conns = [open_connection("target", sshd.hostvars()) for _ in range(2)]
        for conn in conns:
            conn.connect()
        outcome: list[Any] = []

        def both() -> None:
            with _held_until_waited_for(paths.lock_file):
                outcome.extend(_at_once(2, lambda i: run_module(conns[i], "model_fetch", source="huggingface", repo="ZhipuAI/tiny",
                                                                 dest=str(dest), endpoint=hub.url, python=sys.executable)))

        runs = threading.Thread(target=both)
        runs.start()
        try:
            assert hub.holding.wait(60), "no download started"
            time.sleep(0.3)  # a second downloader, if one was started, is up by now
            downloaders = _with_marker(paths.cmd_file)  # each downloader's wrapper has its script in its argv
            assert len(downloaders) == 1, f"{len(downloaders)} downloaders run into {dest}"
        finally:
            hub.release.set()
            runs.join(120)
            for conn in conns:
                conn.close()
    assert all(not isinstance(r, Exception) and not r.failed for r in outcome), [getattr(r, "msg", r) for r in outcome]
    assert sorted(r.data["attached"] for r in outcome) == [False, True]
    assert (dest / "model.safetensors").read_bytes() == files["model.safetensors"]
