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


def api_error(tmp_path: Path, playbook: str, files: dict[str, str] | None = None, **kwargs) -> str:
    """Load a playbook with the loader API and return the LoadError's text (exit code 3)."""
    from glmops.errors import EXIT_LOAD_ERROR, LoadError
    from glmops.playbook.loader import load_playbook

    for name, text in (files or {}).items():
        write(tmp_path / name, text)
    book = write(tmp_path / "site.yml", playbook)
    with pytest.raises(LoadError) as info:
        load_playbook(str(book), **kwargs)
    assert info.value.exit_code == EXIT_LOAD_ERROR
    return str(info.value)


TASKS = "- hosts: all\n  tasks:\n"
HANDLER = "  handlers:\n    - name: restart\n      debug: msg=r\n"


@pytest.mark.parametrize(
    "playbook, files, expected",
    [
        # YAML mistakes
        (TASKS + "    - debug:\n        msg: {{ greeting }}\n", {}, ["site.yml:4:14", "unquoted '{{ ... }}'", 'must be quoted: key: "{{ var }}"']),
        (TASKS + "    - debug:\n        msg: {{ a }}/b\n", {}, ["site.yml:4:", "YAML syntax error", "must be quoted"]),
        (TASKS + "    - debug: msg=a: b\n", {}, ["site.yml:3:19", "mapping values are not allowed", "must be quoted"]),
        (TASKS + "    - debug:\n        msg: 'open\n", {}, ["site.yml:", "YAML syntax error", "closing quote"]),
        (TASKS + "    - debug: msg=a\n    - debug: msg=b\n      debug: msg=c\n", {}, ["site.yml:5:7", "duplicate key 'debug'", "remove or rename"]),
        # playbook and play shape
        ("[]\n", {}, ["site.yml", "non-empty list of plays", "- hosts: all"]),
        ("- just a string\n", {}, ["site.yml:1:3", "a play must be a mapping", "hosts: PATTERN"]),
        ("- hosts: {a: 1}\n", {}, ["site.yml:1:3", "field 'hosts'", "host pattern"]),
        ("- hosts: all\n  tasks: {a: 1}\n", {}, ["site.yml:2:3", "field 'tasks'", "must be a list of tasks"]),
        ("- hosts: all\n  serial_hosts: 2\n", {}, ["site.yml:2:3", "field 'serial_hosts'", "unknown play keyword 'serial_hosts'", "serial"]),
        ("- hosts: all\n  strategy: host_pinned\n", {}, ["site.yml:2:3", "field 'strategy'", "unsupported strategy 'host_pinned'", "linear"]),
        ("- hosts: all\n  become_method: su\n", {}, ["site.yml:2:3", "field 'become_method'", "'su' is not supported", "sudo"]),
        ("- hosts: all\n  connection: winrm\n", {}, ["site.yml:2:3", "field 'connection'", "unsupported connection 'winrm'", "ssh or local"]),
        ("- hosts: all\n  host_key_checking: maybe\n", {}, ["site.yml:2:3", "host_key_checking", "yes, no or accept-new"]),
        ("- hosts: all\n  gather_facts: '{{ x }}'\n", {}, ["site.yml:2:3", "gather_facts", "write true or false"]),
        ("- hosts: all\n  become: perhaps\n", {}, ["site.yml:2:3", "field 'become'", "expected a boolean"]),
        ("- hosts: all\n  vars:\n    my-var: 1\n", {}, ["site.yml:3:5", "vars.my-var", "invalid variable name", "letters, digits and underscores"]),
        ("- hosts: all\n  vars: [a, b]\n", {}, ["site.yml:2:3", "field 'vars'", "expected a mapping"]),
        ("- hosts: all\n  vars_files: ['{{ env }}.yml']\n", {}, ["site.yml:2:16", "vars_files", "templated vars_files", "literally"]),
        ("- hosts: all\n  vars_files: [v.yml]\n", {"v.yml": "- a\n- b\n"}, ["v.yml:1:1", "must be a mapping of variable names"]),
        ("- import_playbook: other.yml\n  when: x\n", {"other.yml": "- hosts: all\n"}, ["site.yml:2:3", "unknown import_playbook keyword 'when'", "imported plays"]),
        ("- import_playbook: nope.yml\n", {}, ["site.yml:1:3", "imported playbook not found", "nope.yml"]),
        # tasks
        (TASKS + "    - just text\n", {}, ["site.yml:3:7", "a task must be a mapping", "name: ..."]),
        (TASKS + "    - ansible.builtin.comand: ls\n", {}, ["site.yml:3:7", "unknown module 'ansible.builtin.comand'", "did you mean: command"]),
        (TASKS + "    - command: ls\n      when: [{x: 1}]\n", {}, ["site.yml:4:7", "field 'when'", "expected a condition", "bare expressions"]),
        (TASKS + "    - command: ls\n      notify: {a: 1}\n" + HANDLER, {}, ["site.yml:4:7", "field 'notify'", "a string or a list of strings"]),
        (TASKS + "    - command: ls\n      notify: restrat\n" + HANDLER, {}, ["site.yml:3:7", "notify names no handler: 'restrat'", "did you mean: restart"]),
        (TASKS + "    - command: ls\n      loop: abc\n", {}, ["site.yml:4:7", "field 'loop'", "needs a list", 'loop: "{{ packages }}"']),
        (TASKS + "    - command: ls\n      loop: [1]\n      loop_control: {loopvar: x}\n", {}, ["site.yml:5:22", "loop_control", "unknown loop_control key 'loopvar'", "loop_var"]),
        (TASKS + "    - command: ls\n      register: my-result\n", {}, ["site.yml:4:7", "field 'register'", "not a valid variable name"]),
        (TASKS + "    - command: ls\n      listen: x\n", {}, ["site.yml:4:7", "field 'listen'", "handlers only"]),
        (TASKS + "    - command: ls\n      retries: often\n", {}, ["site.yml:4:7", "field 'retries'", "expected a number"]),
        (TASKS + "    - command: ls\n      environment: PATH=/bin\n", {}, ["site.yml:4:7", "field 'environment'", "expected a mapping"]),
        (TASKS + "    - debug: hello\n", {}, ["site.yml:3:7", "expected key=value, got 'hello'", "module 'debug' takes: msg, var, verbosity"]),
        (TASKS + "    - copy: 42\n", {}, ["site.yml:3:7", "field 'copy'", "must be a mapping or 'key=value' text"]),
        (TASKS + "    - copy: {dest: /x}\n      args: {mode: '0644', sorce: a}\n", {}, ["site.yml:4:28", "field 'args.sorce'", "unknown argument 'sorce'", "allowed:"]),
        (TASKS + "    - file: path=/x state=folder\n", {}, ["site.yml:3:7", "field 'file.state'", "not one of the allowed choices", "directory"]),
        (TASKS + "    - block:\n        - debug: msg=a\n      rescue: {debug: msg=b}\n", {}, ["site.yml:5:7", "field 'rescue'", "must be a list of tasks"]),
        (TASKS + "    - block: []\n      register: r\n", {}, ["site.yml:4:7", "unknown block keyword 'register'"]),
        # includes, imports, roles
        (TASKS + "    - import_tasks: more.yml\n      loop: [1, 2]\n", {"more.yml": "- debug: msg=x\n"}, ["site.yml:4:7", "cannot loop", "use include_tasks"]),
        (TASKS + "    - import_tasks: '{{ f }}.yml'\n", {}, ["site.yml:3:7", "needs a literal file name", "use include_tasks"]),
        (TASKS + "    - include_tasks: {file: more.yml, apply: {tags: x}}\n", {"more.yml": "- debug: msg=x\n"}, ["site.yml:3:39", "include_tasks.apply", "not supported", "block"]),
        (TASKS + "    - include_tasks: more.yml\n", {"more.yml": "debug: msg=x\n"}, ["more.yml:1:1", "a task file must be a list of tasks"]),
        (TASKS + "    - include_tasks: more.yml\n", {"more.yml": "- debug: msg=x\n  notify: nohandler\n"}, ["more.yml:1:3", "notify names no handler: 'nohandler'"]),
        (TASKS + "    - include_tasks: more.yml\n", {"more.yml": "- include_tasks: more.yml\n"}, ["more.yml:1:3", "includes itself"]),
        (TASKS + "    - include_role: {name: r, allow_duplicates: true}\n", {"roles/r/tasks/main.yml": "- debug: msg=x\n"}, ["site.yml:3:31", "include_role.allow_duplicates", "not supported by glmops"]),
        (TASKS + "    - include_role: {name: r, apply: {register: x}}\n", {"roles/r/tasks/main.yml": "- debug: msg=x\n"}, ["site.yml:3:39", "include_role.apply.register", "cannot be applied"]),
        (TASKS + "    - command: ls\n      with_subelements: [[], x]\n", {}, ["site.yml:4:7", "'with_subelements' is not supported", "with_dict"]),
        (TASKS + "    - command: ls\n      with_dict: {a: 1}\n      loop: [1]\n", {}, ["a task has one loop"]),
        (TASKS + "    - action: {cmd: ls}\n", {}, ["site.yml:3:7", "field 'action'", "needs a module"]),
        (TASKS + "    - import_role: {name: '{{ nope }}'}\n", {}, ["site.yml:3:7", "cannot be rendered when the playbook loads", "include_role"]),
        (TASKS + "    - include_role: {name: r, tasks_from: nope}\n", {"roles/r/tasks/main.yml": "- debug: msg=x\n"}, ["site.yml:3:7", "role 'r' has no tasks file 'nope'", "tasks/nope.yml"]),
        (TASKS + "    - import_role: {name: r, vars_from: nope}\n", {"roles/r/tasks/main.yml": "- debug: msg=x\n"}, ["site.yml:3:7", "role 'r' has no vars file 'nope'", "vars/nope.yml"]),
        (TASKS + "    - include_role: {name: r}\n", {"roles/r/tasks/main.yml": "- debug: {msgg: x}\n"}, ["roles/r/tasks/main.yml:1:11", "unknown argument 'msgg'", "did you mean: msg"]),
        ("- hosts: all\n  roles: [{role: '{{ r }}'}]\n", {}, ["site.yml:2:11", "field 'roles'", "cannot be a template", "include_role"]),
        ("- hosts: all\n  roles: [{port: 1}]\n", {}, ["site.yml:2:11", "field 'roles'", "needs 'role: NAME'"]),
        ("- hosts: all\n  roles: [a]\n", {"roles/a/meta/main.yml": "dependencies: [b]\n", "roles/b/meta/main.yml": "dependencies: [a]\n"},
         ["roles/b/meta/main.yml:1:16", "role dependency loop: a -> b -> a", "meta/main.yml"]),
        ("- hosts: all\n  roles: [a]\n", {"roles/a/meta/main.yml": "dependencies: [nothere]\n"}, ["roles/a/meta/main.yml:1:16", "role 'nothere' not found", "searched:"]),
        ("- hosts: all\n  roles: [a]\n", {"roles/a/handlers/main.yml": "- block: [{debug: msg=x}]\n"}, ["roles/a/handlers/main.yml:1:3", "handlers must be plain tasks"]),
    ],
)
def test_load_errors_name_place_field_and_hint(tmp_path: Path, playbook: str, files: dict[str, str], expected: list[str]) -> None:
    message = api_error(tmp_path, playbook, files)
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


def test_missing_role_lists_every_directory_searched(tmp_path: Path) -> None:
    message = api_error(tmp_path, "- hosts: all\n  roles: [ghost]\n", extra_roles_paths=[str(tmp_path / "more_roles")])
    assert "site.yml:2:11" in message and "role 'ghost' not found" in message
    for searched in (tmp_path / "roles/ghost", tmp_path / "more_roles/ghost"):
        assert str(searched) in message
