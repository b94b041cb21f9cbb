"""The daemon module over the real sshd: idempotent start, changed command, restart, stop, check mode,
a start that fails with the log's last lines, and a playbook run that registers its data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import alive, events, glmops, inventory, results, write
from modhelp import run_module

from glmops.errors import ArgumentError




@pytest.fixture
def files(tmp_path: Path):
    where = {"pid_file": str(tmp_path / "run" / "app.pid"), "log_file": str(tmp_path / "logs" / "app.log")}
    yield where
    pid_file = Path(where["pid_file"])
    if pid_file.exists():  # never leave a daemon behind
        try:
            os.killpg(int(pid_file.read_text().split()[0]), 9)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def test_started_is_idempotent_and_restarts_on_a_changed_command(conn, files, tmp_path: Path) -> None:
    command = "echo serving from $(pwd) with $MODE; exec sleep 300"
    first = run_module(conn, "daemon", name="app", command=command, chdir=str(tmp_path), environment={"MODE": "fast"}, wait=0.3, **files)
    assert first.changed and not first.failed and first.data["running"] and alive(first.data["pid"])
    assert first.data["command"] == command and "started" in first.msg
    again = run_module(conn, "daemon", name="app", command=command, chdir=str(tmp_path), environment={"MODE": "fast"}, **files)
    assert not again.changed and again.data["pid"] == first.data["pid"] and "is running" in again.msg
    assert f"serving from {tmp_path} with fast" in Path(files["log_file"]).read_text()

    would = run_module(conn, "daemon", name="app", command=command, environment={"MODE": "slow"}, check=True, diff=True, **files)
    assert would.changed and "would be restarted" in would.msg and alive(first.data["pid"])
    assert "MODE=slow" in would.diff[0].after and "MODE=fast" in would.diff[0].before

    changed = run_module(conn, "daemon", name="app", command=command, environment={"MODE": "slow"}, wait=0.3, **files)
    assert changed.changed and "command changed" in changed.msg and changed.data["pid"] != first.data["pid"]
    assert not alive(first.data["pid"]) and alive(changed.data["pid"])

    restarted = run_module(conn, "daemon", name="app", command=command, environment={"MODE": "slow"}, state="restarted", wait=0.3, **files)
    assert restarted.changed and restarted.data["pid"] != changed.data["pid"] and alive(restarted.data["pid"])

    would_stop = run_module(conn, "daemon", command=command, state="stopped", check=True, **files)
    assert would_stop.changed and alive(restarted.data["pid"])
    stopped = run_module(conn, "daemon", command=command, state="stopped", **files)
    assert stopped.changed and not stopped.data["running"] and not alive(restarted.data["pid"])
    assert stopped.data["exit_code"] == 143
    assert not run_module(conn, "daemon", command=command, state="stopped", **files).changed


def test_check_mode_does_not_start(conn, files) -> None:
    result = run_module(conn, "daemon", command="exec sleep 300", check=True, **files)
    assert result.changed and "would be started" in result.msg and not Path(files["pid_file"]).exists()


def test_a_start_that_fails_returns_the_log_tail(conn, files) -> None:
    command = "for i in 1 2 3 4 5; do echo line $i; done; echo 'ModuleNotFoundError: no module named fastapi' >&2; exit 7"
    result = run_module(conn, "daemon", name="glmops-serve", command=command, log_lines=3, wait=10, **files)
    assert result.failed and result.data["exit_code"] == 7 and not result.data["running"]
    assert "exit code 7" in result.msg and "ModuleNotFoundError" in result.msg and "line 4" in result.msg
    assert "line 2" not in result.data["log_tail"]
    # it is not running, so "started" tries again (and fails again), never a silent ok
    assert run_module(conn, "daemon", command=command, wait=10, **files).failed


def test_argument_checks() -> None:
    with pytest.raises(ArgumentError, match="must differ"):
        run_module(None, "daemon", command="x", pid_file="/tmp/a", log_file="/tmp/a")
    with pytest.raises(ArgumentError, match="invalid environment variable name"):
        run_module(None, "daemon", command="x", pid_file="/tmp/a", log_file="/tmp/b", environment={"A-B": "1"})
    with pytest.raises(ArgumentError, match="empty"):
        run_module(None, "daemon", command=" ", pid_file="/tmp/a", log_file="/tmp/b")


def test_in_a_playbook_the_daemon_outlives_the_run(sshd, files, tmp_path: Path) -> None:
    inv = inventory(tmp_path / "inv.yml", {"target": sshd.hostvars()})
    book = write(tmp_path / "play.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: start
              daemon:
                name: sleeper
                command: exec sleep 300
                pid_file: {files['pid_file']}
                log_file: {files['log_file']}
              register: started
            - name: show
              debug:
                msg: "pid {{{{ started.pid }}}} running {{{{ started.running }}}}"
    """)
    first = glmops("run", str(book), "-i", str(inv), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    # while it watches the new process (`wait`, 2 s by default) the task reports progress as it goes
    watched = [e for e in events(first.stdout) if e["event"] == "progress" and e["task"] == "start"]
    assert watched and watched[-1]["done"] == watched[-1]["total"] == 2.0 and watched[-1]["unit"] == "s"
    assert watched[-1]["msg"] == "watching sleeper"
    shown = results(first.stdout, "show")["target"]
    pid = int(Path(files["pid_file"]).read_text())
    assert f"pid {pid} running True" in str(shown) and alive(pid)  # the SSH session is gone, the daemon is not
    second = glmops("run", str(book), "-i", str(inv), "--json")
    assert [e["stats"]["target"]["changed"] for e in events(second.stdout) if e["event"] == "recap"] == [0]
    assert int(Path(files["pid_file"]).read_text()) == pid
