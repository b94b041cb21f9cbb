"""An error inside one task is that host's task failure with file:line; the run goes on (issue 10, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import events, glmops, inventory, recap, results, write

PLAYBOOK = """
    - hosts: all
      gather_facts: false
      tasks:
        - name: list literal
          debug: msg="{{ [undefined_x] }}"
          ignore_errors: true
        - name: nested args
          set_fact: {a: ["{{ nope }}"]}
          ignore_errors: true
        - name: dict literal
          debug: {msg: "{{ {'k': undefined_y} }}"}
          ignore_errors: true
        - name: list in text
          command: echo {{ [undefined_z] }}
          ignore_errors: true
        - name: defaults still work
          debug: {msg: "{{ [undefined_w | default('fine'), missing is defined] }}"}
        - name: after
          command: echo still running
    """


@pytest.mark.parametrize("as_json", [True, False])
def test_undefined_inside_a_literal_fails_only_the_task(tmp_path: Path, sshd, as_json: bool) -> None:
    book = write(tmp_path / "site.yml", PLAYBOOK)
    inv = inventory(tmp_path / "hosts.yml", {"target": sshd.hostvars()})
    run = glmops("run", str(book), "-i", str(inv), *(["--json"] if as_json else []), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "internal error" not in run.stdout + run.stderr
    lines = {"list literal": (4, "undefined_x"), "nested args": (7, "nope"), "dict literal": (10, "undefined_y"),
             "list in text": (13, "undefined_z")}
    if not as_json:
        for line, name in lines.values():
            assert f"site.yml:{line}:7: field 'args." in run.stdout and f"undefined variable '{name}'" in run.stdout
        assert "ignored=4" in run.stdout and "failed=0" in run.stdout and "TASK after" in run.stdout
        return
    for task, (line, name) in lines.items():
        event = results(run.stdout, task)["target"]
        assert event["status"] == "failed" and event["ignored"], event
        assert f"site.yml:{line}:" in event["msg"] and f"undefined variable '{name}'" in event["msg"], event["msg"]
    assert results(run.stdout, "defaults still work")["target"]["result"]["msg"] == ["fine", False]
    assert results(run.stdout, "after")["target"]["result"]["stdout"] == "still running"
    assert recap(run.stdout)["target"]["ignored"] == 4
    assert events(run.stdout)[-1]["event"] == "recap"
