"""Ctrl-C (issue 10, item 7): the first SIGINT says what it stops, kills the remote commands the run
started (their process groups), prints the recap and exits 99."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from helpers import ROOT, events, interrupt_once_marked, inventory, write


@pytest.mark.parametrize(("connection", "as_json"), [("ssh", False), ("local", False), ("ssh", True)])
def test_first_sigint_stops_remote_commands_prints_recap_exits_99(tmp_path: Path, sshd, connection: str, as_json: bool) -> None:
    mark = f"glmops-test-{uuid.uuid4().hex}"
    hostvars = sshd.hostvars() if connection == "ssh" else {"ansible_connection": "local"}
    inv = inventory(tmp_path / "hosts.yml", {"target": hostvars})
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: long sleep
              command: sleep 300
              environment: {{GLMOPS_TEST_MARK: "{mark}"}}
            - name: never runs
              command: touch {tmp_path}/ran
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    argv = [sys.executable, "-m", "glmops", "run", str(book), "-i", str(inv), *(["--json"] if as_json else [])]
    returncode, out, err, survivors = interrupt_once_marked(argv, mark, env=env, cwd=tmp_path)
    assert survivors == [], "the remote command survived the interruption"
    assert returncode == 99, out + err
    assert not (tmp_path / "ran").exists()
    if as_json:
        kinds = [e["event"] for e in events(out)]
        assert "interrupted" in kinds and kinds[-1] == "recap" and events(out)[-1]["interrupted"] is True, kinds
        assert "never runs" not in out
        assert "interrupted: stopping task 'long sleep' on target" in err
        return
    assert "interrupted" in out and "task 'long sleep' on target" in out, out
    assert "PLAY RECAP" in out and "target" in out.split("PLAY RECAP")[1]
    assert "never runs" not in out
