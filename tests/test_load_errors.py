"""Bad input: every error names the file, line, field and a hint, exits 3, and nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import glmops, write

LOCAL_INV = "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"


def load_error(tmp_path: Path, playbook: str, *args: str, files: dict[str, str] | None = None, inventory: str = LOCAL_INV) -> str:
    marker = tmp_path / "ran"
    for name, text in (files or {}).items():
        write(tmp_path / name, text)
    write(tmp_path / "inv.yml", inventory)
    book = write(tmp_path / "site.yml", playbook.replace("MARK", str(marker)))
    result = glmops("run", str(book), "-i", str(tmp_path / "inv.yml"), *args, cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert not marker.exists(), "a task ran although the playbook did not load"
    assert result.stdout == ""
    return result.stderr


FIRST_TASK = "- hosts: all\n  tasks:\n    - command: touch MARK\n"


@pytest.mark.parametrize(
    "playbook, expected",
    [
        (FIRST_TASK + "    - name: bad\n\tcommand: ls\n", ["site.yml:5:1", "tab", "spaces"]),
        (FIRST_TASK + "    - debug: msg={{ x }\n      when: [\n", ["site.yml:", "YAML syntax error"]),
        (FIRST_TASK + "    - name: typo\n      comand: ls\n", ["site.yml:5:7", "unknown module 'comand'", "did you mean: command"]),
        (FIRST_TASK + "    - name: x\n      copy:\n        src: a\n        destination: /tmp/x\n", ["site.yml:7:9", "copy.destination", "unknown argument 'destination'", "allowed:", "dest"]),
        (FIRST_TASK + "    - name: x\n      file:\n        state: directory\n", ["site.yml:5:7", "missing required argument 'path'"]),
        (FIRST_TASK + "    - name: x\n      file:\n        path: /tmp/x\n        state: folder\n", ["site.yml:7:9", "state", "not one of the allowed choices", "directory"]),
        (FIRST_TASK + "    - name: x\n      apt:\n        name: git\n        update_cache: maybe\n", ["site.yml:7:9", "update_cache", "expected a boolean"]),
        (FIRST_TASK + "    - name: x\n      command: ls\n      whn: x\n", ["site.yml:6:7", "unknown task keyword 'whn'", "when"]),
        ("- hosts: all\n  taks:\n    - command: ls\n", ["site.yml:2:3", "unknown play keyword 'taks'", "tasks"]),
        ("- name: no hosts\n  tasks:\n    - command: ls\n", ["site.yml:1:3", "a play needs 'hosts'"]),
        (FIRST_TASK + "    - command: ls\n      shell: ls\n", ["site.yml:5:7", "has 2", "split it"]),
        (FIRST_TASK + "    - name: nothing\n      when: x\n", ["site.yml:4:7", "no module"]),
        (FIRST_TASK + "    - command: ls\n      tags: {a: 1}\n", ["site.yml:5:7", "tags", "expected a string or a list"]),
        (FIRST_TASK + "    - command: ls\n      notify: restart\n", ["site.yml:4:7", "notify names no handler: 'restart'"]),
        ("- hosts: all\n  roles: [nosuchrole]\n", ["site.yml:2:11", "role 'nosuchrole' not found", "searched:"]),
        ("- hosts: all\n  vars_files: [missing.yml]\n  tasks: []\n", ["site.yml:2:16", "vars file not found", "missing.yml"]),
        (FIRST_TASK + "    - include_tasks: nope.yml\n", ["site.yml:4:7", "task file not found", "nope.yml"]),
        (FIRST_TASK + "    - command: ls\n      loop: [1]\n      with_items: [2]\n", ["site.yml:6:7", "either 'loop' or 'with_items'"]),
        ("- hosts: nosuchgroup\n  tasks:\n    - command: touch MARK\n", ["site.yml:1:3", "matches no host", "localhost"]),
        ("hosts: all\n", ["site.yml", "list of plays"]),
    ],
)
def test_playbook_errors(tmp_path: Path, playbook: str, expected: list[str]) -> None:
    message = load_error(tmp_path, playbook)
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


def test_error_inside_role_and_included_file_reported_before_running(tmp_path: Path) -> None:
    files = {"roles/web/tasks/main.yml": "- name: ok\n  debug: msg=hi\n- name: bad\n  copy: {srcc: a}\n"}
    message = load_error(tmp_path, FIRST_TASK.replace("  tasks:", "  roles: [web]\n  tasks:"), files=files)
    assert "roles/web/tasks/main.yml:4:10" in message and "unknown argument 'srcc'" in message
    files = {"more.yml": "- name: bad\n  nosuchmodule: {}\n"}
    message = load_error(tmp_path, FIRST_TASK + "    - include_tasks: more.yml\n", files=files)
    assert "more.yml:2:3" in message and "unknown module 'nosuchmodule'" in message


def test_inventory_errors(tmp_path: Path) -> None:
    message = load_error(tmp_path, FIRST_TASK, inventory="all:\n  hosts:\n    web1: 1.2.3.4\n")
    assert "inv.yml:3:5" in message and "host 'web1' must be a mapping" in message
    message = load_error(tmp_path, FIRST_TASK, inventory="all:\n  host:\n    web1:\n")
    assert "inv.yml:2:3" in message and "unknown key 'host'" in message
    message = load_error(tmp_path, FIRST_TASK, inventory="all:\n  hosts:\n    web1:\n      ansible_port: abc\n")
    assert "ansible_port must be a port number" in message


def test_missing_inventory_and_playbook(tmp_path: Path) -> None:
    write(tmp_path / "site.yml", FIRST_TASK)
    result = glmops("run", str(tmp_path / "site.yml"), "-i", str(tmp_path / "nope.yml"))
    assert result.returncode == 3 and "inventory not found" in result.stderr and "nope.yml" in result.stderr
    result = glmops("run", str(tmp_path / "nope.yml"))
    assert result.returncode == 3 and "playbook not found" in result.stderr


def test_limit_matching_nothing(tmp_path: Path) -> None:
    message = load_error(tmp_path, FIRST_TASK, "--limit", "nohost")
    assert "--limit 'nohost' matches no host" in message


def test_bad_extra_vars(tmp_path: Path) -> None:
    message = load_error(tmp_path, FIRST_TASK, "-e", "novalue")
    assert "expected NAME=VALUE" in message


def test_undefined_variable_names_variable_task_and_field(tmp_path: Path) -> None:
    write(tmp_path / "inv.yml", LOCAL_INV)
    book = write(tmp_path / "site.yml", "- hosts: all\n  tasks:\n    - name: uses it\n      copy: {content: 'x', dest: '{{ dest_dir }}/f'}\n")
    result = glmops("run", str(book), "-i", str(tmp_path / "inv.yml"))
    assert result.returncode == 2
    assert "site.yml:3:7" in result.stdout and "undefined variable 'dest_dir'" in result.stdout and "args.dest" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_traceback_only_with_vvv(tmp_path: Path) -> None:
    write(tmp_path / "inv.yml", LOCAL_INV)
    book = write(tmp_path / "site.yml", "- hosts: all\n  tasks:\n    - comand: ls\n")
    quiet = glmops("run", str(book), "-i", str(tmp_path / "inv.yml"))
    loud = glmops("run", str(book), "-i", str(tmp_path / "inv.yml"), "-vvv")
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
