"""Variable precedence, every level in order, checked through a real run; tags; start-at-task; become."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers import glmops, recap, results, write

LEVELS = ["defaults", "all", "group", "host", "play", "vars_files", "role_vars", "block", "task", "set_fact", "extra"]


def defined_up_to(level: str) -> dict[str, str]:
    """v1..v11: v{N} is defined at every level up to the N-th, with that level's name."""
    index = LEVELS.index(level)
    return {f"v{n + 1}": level for n in range(index, len(LEVELS))}


def test_precedence_table(tmp_path: Path) -> None:
    inventory = {"all": {"vars": defined_up_to("all"), "children": {"g": {"vars": defined_up_to("group"),
                 "hosts": {"localhost": {"ansible_connection": "local", **defined_up_to("host")}}}}}}
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(inventory))
    write(tmp_path / "vars.yml", yaml.safe_dump(defined_up_to("vars_files")))
    write(tmp_path / "roles/r/defaults/main.yml", yaml.safe_dump(defined_up_to("defaults")))
    write(tmp_path / "roles/r/vars/main.yml", yaml.safe_dump(defined_up_to("role_vars")))
    names = ", ".join(f"v{n}" for n in range(1, len(LEVELS) + 1))
    tasks = [
        {"set_fact": defined_up_to("set_fact")},
        {"block": [{"name": "show", "vars": defined_up_to("task"), "debug": {"msg": "{{ [%s] | join(',') }}" % names}}], "vars": defined_up_to("block")},
    ]
    write(tmp_path / "roles/r/tasks/main.yml", yaml.safe_dump(tasks, allow_unicode=True))
    play = [{"hosts": "all", "gather_facts": False, "vars": defined_up_to("play"), "vars_files": ["vars.yml"], "roles": ["r"]}]
    write(tmp_path / "site.yml", yaml.safe_dump(play))
    result = glmops("run", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inv.yml"), "-e", "v11=extra", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert results(result.stdout, "show")["localhost"]["msg"] == ",".join(LEVELS)


def test_start_at_task_and_become(tmp_path: Path) -> None:
    write(tmp_path / "inv.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - {{name: first, command: "touch {tmp_path}/first"}}
            - {{name: second, command: "touch {tmp_path}/second"}}
            - name: as nobody
              command: id -un
              become: true
              become_user: nobody
              register: who
            - assert: {{that: "who.stdout == 'nobody'"}}
        """)
    result = glmops("run", str(book), "-i", str(tmp_path / "inv.yml"), "--start-at-task", "second", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert not (tmp_path / "first").exists() and (tmp_path / "second").exists()
    assert recap(result.stdout)["localhost"]["changed"] == 2


def test_environment_play_block_task(tmp_path: Path) -> None:
    write(tmp_path / "inv.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    book = write(tmp_path / "site.yml", """
        - hosts: all
          gather_facts: false
          environment: {A: play, B: play, C: play}
          tasks:
            - block:
                - name: env
                  shell: echo "$A $B $C"
                  environment: {C: task}
              environment: {B: block}
        """)
    result = glmops("run", str(book), "-i", str(tmp_path / "inv.yml"), "--json", cwd=tmp_path)
    assert results(result.stdout, "env")["localhost"]["result"]["stdout"] == "play block task"


def test_ansible_playbook_python_is_the_python_running_glmops(tmp_path: Path) -> None:
    """The glmops_wheel role runs its builder with it: a laptop may have no `python3` on PATH."""
    import sys

    write(tmp_path / "inv.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    write(tmp_path / "site.yml", "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: show\n      debug: {var: ansible_playbook_python}\n")
    result = glmops("run", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inv.yml"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert results(result.stdout, "show")["localhost"]["result"]["ansible_playbook_python"] == sys.executable
