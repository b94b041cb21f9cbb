"""A host that stops answering mid-run (its sshd session processes frozen with SIGSTOP) must not hang
the run: keepalives give up on it, it is UNREACHABLE with how long it was waited for, the other
hosts finish, and the run exits 4."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT, events, inventory, recap, write


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_frozen_host_becomes_unreachable_and_the_others_finish(tmp_path: Path, sshd, sshd_factory) -> None:
    frozen = sshd_factory()
    marker = tmp_path / "frozen-started"
    hosts = {
        "healthy": sshd.hostvars(),
        "frozen": {**frozen.hostvars(), "ansible_ssh_common_args": "-o ServerAliveInterval=1 -o ServerAliveCountMax=2"},
    }
    inv = inventory(tmp_path / "hosts.yml", hosts)
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: connect
              command: "true"
            - name: long
              shell: "if [ {{{{ inventory_hostname }}}} = frozen ]; then touch {marker}; fi; sleep 3"
            - name: after
              command: echo done
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "glmops", "run", str(book), "-i", str(inv), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run never reached the long task on the frozen host"
        stopped = frozen.sessions()
        assert stopped, "no sshd session processes to freeze"
        _signal_all(stopped, signal.SIGSTOP)
        out, err = proc.communicate(timeout=90)  # a hang fails here instead of blocking the suite
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _signal_all(stopped, signal.SIGCONT)
        frozen.stop()
    assert proc.returncode == 4, out + err
    stats = recap(out)
    assert stats["frozen"]["unreachable"] == 1 and stats["healthy"]["unreachable"] == 0
    assert stats["healthy"]["ok"] == 3  # the healthy host finished every task
    unreachable = [e for e in events(out) if e["event"] == "host_result" and e["status"] == "unreachable"]
    assert [e["host"] for e in unreachable] == ["frozen"]
    msg = unreachable[0]["msg"]
    assert "stopped answering" in msg and "no reply to keepalives for" in msg and "ServerAliveInterval 1" in msg
