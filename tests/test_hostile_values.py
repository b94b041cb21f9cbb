"""Hostile values in every module argument that reaches a remote program (issue 10, item 1).

One real `glmops run` over the test sshd runs every (module, argument, value) of the table as its own
task. A value starting with '-' must be refused with an error naming the argument; shell syntax must
be taken literally. Nothing may ever run the MARKER command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers import glmops, inventory, results

PIP = str(Path(sys.executable).with_name("pip"))
DASH = ["--upload-pack=touch {m};", "-x"]
SHELL = ["$(touch {m})", ";touch {m}", "`touch {m}`"]

# (module, arguments with the hostile value as V, the argument holding it, is it a path, extra task keys)
TABLE: list[tuple[str, dict[str, Any], str, bool, dict[str, Any]]] = [
    ("git", {"repo": "V", "dest": "{base}/g-repo-{n}"}, "repo", False, {}),
    ("git", {"repo": "{repo}", "dest": "{base}/g-version-{n}", "version": "V"}, "version", False, {}),
    ("git", {"repo": "{repo}", "dest": "{base}/g-remote-{n}", "remote": "V"}, "remote", False, {}),
    ("git", {"repo": "{repo}", "dest": "V"}, "dest", True, {}),
    ("git", {"repo": "{repo}", "dest": "{base}/g-lfs-{n}", "lfs": True, "lfs_include": "V"}, "lfs_include", False, {}),
    ("get_url", {"url": "V", "dest": "{base}/dl-{n}"}, "url", False, {}),
    ("get_url", {"url": "http://127.0.0.1:9/x", "dest": "V"}, "dest", True, {}),
    ("copy", {"content": "x\n", "dest": "V"}, "dest", True, {}),
    ("copy", {"content": "x\n", "dest": "{base}/c-{n}", "backup": True, "mode": "0600", "owner": "V"}, "owner", False, {}),
    ("template", {"src": "{tpl}", "dest": "V"}, "dest", True, {}),
    ("file", {"path": "V", "state": "directory"}, "path", True, {}),
    ("file", {"path": "{base}/ln-{n}", "state": "link", "src": "V"}, "src", True, {}),
    ("file", {"path": "{base}/own-{n}", "state": "touch", "owner": "V"}, "owner", False, {}),
    ("file", {"path": "{base}/grp-{n}", "state": "touch", "group": "V"}, "group", False, {}),
    ("lineinfile", {"path": "V", "line": "x", "create": True}, "path", True, {}),
    ("fetch", {"src": "V", "dest": "{base}/fetched/"}, "src", True, {}),
    ("stat", {"path": "V"}, "path", True, {}),
    ("apt", {"name": ["V"]}, "name", False, {"check_mode": True}),
    ("pip", {"name": ["V"], "executable": PIP}, "name", False, {}),
    ("uri", {"url": "V", "timeout": 2}, "url", False, {}),
    ("uri", {"url": "http://127.0.0.1:9/", "method": "V", "timeout": 2}, "method", False, {}),
    ("wait_for", {"host": "V", "port": 9, "timeout": 0, "connect_timeout": 1}, "host", False, {}),
    ("wait_for", {"path": "V", "timeout": 0}, "path", True, {}),
    ("wait_for", {"path": "{tpl}", "search_regex": "V", "timeout": 0}, "search_regex", False, {}),
    ("command", {"cmd": "true", "chdir": "V"}, "chdir", True, {}),
    ("command", {"cmd": "true", "creates": "V"}, "creates", True, {}),
    ("command", {"argv": ["V", "x"]}, "argv", False, {}),
    ("shell", {"cmd": "true", "executable": "V"}, "executable", True, {}),
]


def _fill(value: Any, fields: dict[str, str]) -> Any:
    if isinstance(value, str):
        return fields["V"] if value == "V" else value.format(**fields)
    if isinstance(value, list):
        return [_fill(v, fields) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, fields) for k, v in value.items()}
    return value


def _git_repo(path: Path) -> Path:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(path)}
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    (path / "README").write_text("hi\n")
    subprocess.run(["git", "-C", str(path), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "one"], check=True, env=env)
    return path


def test_hostile_values_never_run_and_dashes_are_refused(tmp_path: Path, sshd) -> None:
    marker = tmp_path / "MARKER"
    base = tmp_path / "work"
    base.mkdir()
    tpl = tmp_path / "t.j2"
    tpl.write_text("hello\n")
    repo = _git_repo(tmp_path / "repo")
    tasks, expected = [], {}
    n = 0
    for module, args, field, is_path, extra in TABLE:
        for kind, values in (("dash", DASH), ("shell", SHELL)):
            for raw in values:
                n += 1
                value = raw.format(m=marker)
                if is_path and kind == "shell":
                    value = f"{base}/{value}"  # never a relative junk file in the login user's home
                fields = {"V": "{{ hostile }}", "base": str(base), "repo": str(repo), "tpl": str(tpl), "n": str(n)}
                name = f"{module}.{field} #{n}"
                tasks.append({"name": name, module: _fill(args, fields), "vars": {"hostile": value},
                              "ignore_errors": True, **extra})
                expected[name] = (kind, field, value)
    book = tmp_path / "site.yml"
    book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    inv = inventory(tmp_path / "hosts.yml", {"target": sshd.hostvars()})
    run = glmops("run", str(book), "-i", str(inv), "--json", cwd=tmp_path, timeout=600)
    assert not marker.exists(), "a hostile value ran a command on the target"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr  # every failure is ignored; nothing crashed
    for name, (kind, field, value) in expected.items():
        got = results(run.stdout, name)
        assert "target" in got, f"no result for {name}"
        event = got["target"]
        if kind == "dash":
            assert event["status"] == "failed", (name, event)
            assert f"field '{field}'" in event["msg"] and "refused" in event["msg"], (name, event["msg"])
        else:
            assert event["status"] in ("ok", "changed", "failed"), (name, event)
    # Shell syntax is data: `file state=directory` made a directory with exactly that name.
    assert (base / f"$(touch {marker})").is_dir()
    assert not marker.exists()


def test_literal_dash_value_in_the_playbook_is_a_load_error(tmp_path: Path, sshd) -> None:
    marker = tmp_path / "MARKER"
    book = tmp_path / "site.yml"
    book.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"git": {"repo": f"--upload-pack=touch {marker};", "dest": str(tmp_path / "clone")}}]}]))
    inv = inventory(tmp_path / "hosts.yml", {"target": sshd.hostvars()})
    run = glmops("run", str(book), "-i", str(inv), cwd=tmp_path)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "field 'git.repo'" in run.stderr and "refused" in run.stderr
    assert not marker.exists()
