"""Day-2 commands where the host is not as expected: a server whose start time is not recorded, a log
with a huge last line, a server that takes the connection and never answers. The real `glmops`
command against the real test sshd and real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, alive, glmops, write
from modhelp import run_module

from glmops.layout import Layout
from glmops.modules import _detached
from glmops.modules._detached import Paths, build_script


@pytest.fixture
def deployment(sshd, tmp_path: Path) -> Iterator[dict]:
    """A deploy_dir on the test sshd (nothing in it yet) and an inventory naming it as host gpu1."""
    deploy = tmp_path / "glmops"
    layout = Layout(str(deploy))
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"gpu1": {**sshd.hostvars(), "deploy_dir": str(deploy)}}}}))
    made = {"inv": str(inv), "layout": layout, "paths": Paths(layout.pid_file, layout.log_file)}
    yield made
    pid_file = Path(layout.pid_file)
    if pid_file.exists():  # never leave a process behind
        try:
            os.killpg(int(pid_file.read_text().split()[0]), 9)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def test_stop_does_not_signal_a_pid_whose_start_time_is_not_recorded(conn, deployment: dict) -> None:
    paths: Paths = deployment["paths"]
    started = _detached.start(conn, paths, build_script("exec sleep 300"), wait=0)
    assert started.running
    os.remove(paths.start_file)  # e.g. removed by hand: the pid alone proves nothing

    stopped = glmops("stop", "gpu1", "-i", deployment["inv"], "--timeout", "2")
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    assert "gpu1: not stopped" in stopped.stderr and f"{paths.start_file} is missing or empty" in stopped.stderr
    assert "nothing was signalled" in stopped.stderr and "Traceback" not in stopped.stderr
    assert alive(started.pid)

    status = glmops("status", "gpu1", "-i", deployment["inv"], "--json")
    assert "start time is not recorded" in status.stdout
    again = run_module(conn, "daemon", name="api", command="exec sleep 300", pid_file=paths.pid_file, log_file=paths.log_file)
    assert again.failed and not again.changed and "cannot be proved" in again.msg
    assert Path(paths.pid_file).read_text().strip() == str(started.pid) and alive(started.pid)  # nothing else started
    restart = glmops("restart", "gpu1", "-i", deployment["inv"], "--no-wait")
    assert restart.returncode == 2 and "gpu1: not restarted" in restart.stderr and alive(started.pid), restart.stderr


def test_logs_caps_a_huge_last_line_and_says_so(deployment: dict) -> None:
    log = Path(deployment["layout"].log_file)
    log.parent.mkdir(parents=True)
    with open(log, "wb") as handle:
        handle.write(b"first line\nsecond line\n")
        handle.write(b"x" * (50 * 1024 * 1024) + b" END\n")
    shown = glmops("logs", "gpu1", "-i", deployment["inv"], "-n", "3")
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout) <= 3 * 64 * 1024 + 100  # not 50 MB
    assert shown.stdout.startswith("[cut] xxx") and shown.stdout.endswith("x END\n")
    assert "the first line shown is cut" in shown.stderr and "second line" not in shown.stdout

    with open(log, "ab") as handle:  # a short last line: the lines before it are whole, nothing is marked
        handle.write(b"short one\n")
    one = glmops("logs", "gpu1", "-i", deployment["inv"], "-n", "1")
    assert one.stdout == "short one\n" and "cut" not in one.stderr


def test_logs_lines_of_a_small_log_are_whole(deployment: dict) -> None:
    log = Path(deployment["layout"].log_file)
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    shown = glmops("logs", "gpu1", "-i", deployment["inv"], "-n", "3")
    assert shown.returncode == 0 and shown.stdout == "line 97\nline 98\nline 99\n" and shown.stderr == ""


def test_logs_follow_skips_a_flood_to_its_last_mebibyte(deployment: dict) -> None:
    log = Path(deployment["layout"].log_file)
    log.parent.mkdir(parents=True)
    log.write_text("before\n")
    follower = subprocess.Popen([sys.executable, "-m", "glmops", "logs", "gpu1", "-i", deployment["inv"], "-n", "1", "-f",
                                 "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert follower.stdout is not None and follower.stdout.readline() == b"before\n"
        with open(log, "ab") as handle:  # 3 MiB at once, between two reads
            handle.write(b"y" * (3 * 1024 * 1024) + b" FLOOD-END\n")
        got = b""
        deadline = time.monotonic() + 30
        while b"FLOOD-END" not in got and time.monotonic() < deadline:
            got += follower.stdout.read1(1 << 20)
    finally:
        follower.terminate()
        _, err = follower.communicate(timeout=10)
    assert got.endswith(b"y FLOOD-END\n") and len(got) <= 1024 * 1024 + 10, len(got)
    assert f"skipped {3 * 1024 * 1024 + len(' FLOOD-END') + 1 - 1024 * 1024} bytes".encode() in err


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback port that takes connections and never answers: (port, the connections it took)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], held
    listener.close()
    for sock in held:
        sock.close()


@pytest.mark.parametrize("route", ["base-url", "over SSH"])
def test_chat_gives_up_on_a_server_that_never_answers(silent_server, sshd, tmp_path: Path, route: str) -> None:
    port, held = silent_server
    if route == "base-url":
        args = ["hello", "--base-url", f"http://127.0.0.1:{port}/v1"]
        url = f"http://127.0.0.1:{port}/v1"
    else:  # a direct-tcpip channel of the host's SSH connection to its api_port
        inv = tmp_path / "hosts.yml"
        inv.write_text(yaml.safe_dump({"all": {"hosts": {"gpu1": {**sshd.hostvars(), "api_port": port}}}}))
        args = ["gpu1", "hello", "-i", str(inv)]
        url = f"http://127.0.0.1:{port}/v1 on gpu1 (over SSH)"
    began = time.monotonic()
    result = glmops("chat", *args, "--timeout", "2")
    took = time.monotonic() - began
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 15 and held  # it did connect, and gave up after the 2 s (plus the interpreter's start)
    assert f"{url} took the connection but sent no answer within 2 s" in result.stderr
    assert "glmops status HOST" in result.stderr and "glmops logs HOST" in result.stderr and "Traceback" not in result.stderr


def test_day2_commands_read_the_users_inventory_without_i(tmp_path: Path) -> None:
    """`glmops up` records hosts in ~/.config/glmops/inventory.yml: status, logs, chat ... find them with no -i."""
    config = tmp_path / "config"
    write(config / "glmops" / "inventory.yml", "all:\n  hosts:\n    my-gpu:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n")
    found = glmops("status", "my-gpu", env={"XDG_CONFIG_HOME": str(config), "GLMOPS_INVENTORY": ""}, cwd=tmp_path)
    assert "no host matches" not in found.stdout + found.stderr and "my-gpu" in found.stdout + found.stderr
    missing = glmops("status", "my-gpu", env={"XDG_CONFIG_HOME": str(tmp_path / "nothing"), "GLMOPS_INVENTORY": ""}, cwd=tmp_path)
    assert missing.returncode != 0 and "no host matches 'my-gpu'" in missing.stdout + missing.stderr
