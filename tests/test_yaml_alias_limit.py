"""YAML alias bombs ("billion laughs"): a few hundred bytes of nested aliases are refused when the
file is loaded (inventory, playbook, vars files, from_yaml of host text), with the file and line,
instead of hanging the run. Real `glmops` commands, each given 20 s."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import glmops, inventory, results, write

BOMB_LEVELS = "\n".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip("abcdefgh", "bcdefghi")
)
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB_LEVELS + "\n"  # 9**9 values


def _indented(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def _refused(done, path: Path) -> None:
    assert done.returncode != 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert f"{path.name}:" in output and "alias" in output, output
    assert "Traceback" not in output


def test_inventory_bomb_is_refused(tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.yml", "all:\n  hosts:\n    target:\n      ansible_connection: local\n" + _indented(BOMB, 6))
    assert len(bomb.read_bytes()) < 600
    listed = glmops("inventory", "list", "-i", str(bomb), cwd=tmp_path, timeout=20)
    _refused(listed, bomb)
    assert "bomb.yml:10:" in listed.stdout + listed.stderr  # the list (f) whose aliases pass the limit
    book = write(tmp_path / "site.yml", "- hosts: all\n  tasks:\n    - debug: {msg: hi}\n")
    _refused(glmops("run", str(book), "-i", str(bomb), cwd=tmp_path, timeout=20), bomb)


def test_vars_file_bomb_is_refused(tmp_path: Path) -> None:
    hosts = inventory(tmp_path / "hosts.yml", {"me": {"ansible_connection": "local"}})
    bomb = write(tmp_path / "vars.yml", BOMB)
    book = write(tmp_path / "site.yml", "- hosts: all\n  vars_files: [vars.yml]\n  tasks:\n    - debug: {var: i}\n")
    _refused(glmops("run", str(book), "-i", str(hosts), cwd=tmp_path, timeout=20), bomb)


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    hosts = inventory(tmp_path / "hosts.yml", {"me": {"ansible_connection": "local"}})
    book = write(tmp_path / "site.yml", "- hosts: all\n  vars:\n    loop_: &self [1, *self]\n  tasks:\n    - debug: {var: loop_}\n")
    done = glmops("run", str(book), "-i", str(hosts), cwd=tmp_path, timeout=20)
    _refused(done, book)
    assert "refers to a mapping or list that contains it" in done.stdout + done.stderr


def test_from_yaml_of_host_text_is_limited(tmp_path: Path) -> None:
    """The from_yaml filter reads host text with the same limit: the task fails, the run goes on."""
    hosts = inventory(tmp_path / "hosts.yml", {"me": {"ansible_connection": "local"}})
    source = write(tmp_path / "host" / "bomb.yml", BOMB)
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          tasks:
            - command: cat {source}
              register: out
            - name: parse
              debug: {{msg: "{{{{ out.stdout | from_yaml }}}}"}}
              ignore_errors: true
        """)
    done = glmops("run", str(book), "-i", str(hosts), "--json", cwd=tmp_path, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = results(done.stdout, "parse")["me"]
    assert shown["status"] == "failed" and "alias" in shown["msg"], shown


@pytest.mark.parametrize("uses", [2, 50])
def test_ordinary_aliases_still_work(tmp_path: Path, uses: int) -> None:
    common = "common: &common {port: 6006, tags: [a, b]}\n" + "".join(f"h{i}: *common\n" for i in range(uses))
    hosts = write(tmp_path / "hosts.yml", "all:\n  hosts:\n    me:\n      ansible_connection: local\n" + _indented(common, 6))
    book = write(tmp_path / "site.yml", f"- hosts: all\n  tasks:\n    - debug: {{msg: \"{{{{ h{uses - 1}.port }}}}\"}}\n")
    done = glmops("run", str(book), "-i", str(hosts), "--json", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert results(done.stdout, "debug")["me"]["msg"] == "6006"
