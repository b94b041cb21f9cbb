"""`glmops inventory add` (login line -> host entry, comments kept) and `glmops inventory list`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import glmops, write

from glmops.commands.inventory import parse_login
from glmops.errors import GlmopsError
from glmops.inventory import load_inventory

AUTODL = ["ssh", "-p", "12345", "root@region-9.autodl.com"]


@pytest.mark.parametrize(
    "words, expected",
    [
        (["ssh", "-p", "12345", "root@region-9.autodl.com"], ("root", "region-9.autodl.com", 12345, None)),
        (["ssh", "root@region-9.autodl.com", "-p", "12345"], ("root", "region-9.autodl.com", 12345, None)),
        (["ssh -p 2222 -i ~/.ssh/k user@h"], ("user", "h", 2222, "~/.ssh/k")),
        (["ssh", "-p2222", "-i/k", "user@h"], ("user", "h", 2222, "/k")),
        (["ssh://u@h:2200"], ("u", "h", 2200, None)),
        (["ssh", "ssh://h"], (None, "h", None, None)),
        (["ssh", "-o", "StrictHostKeyChecking=no", "-l", "me", "host"], ("me", "host", None, None)),
        (["ssh -CNg -L 6006:127.0.0.1:6006 root@region-9.autodl.com -p 23456"], ("root", "region-9.autodl.com", 23456, None)),
        (["root@10.0.0.5"], ("root", "10.0.0.5", None, None)),
    ],
)
def test_parse_login_line(words: list[str], expected: tuple) -> None:
    line = parse_login(words)
    assert (line.user, line.host, line.port, line.key) == expected


def test_parse_login_reports_ignored_options() -> None:
    assert parse_login(["ssh", "-o", "ServerAliveInterval=30", "-A", "h"]).ignored == ["-o ServerAliveInterval=30", "-A"]


@pytest.mark.parametrize(
    "words, message",
    [
        (["ssh", "-p", "22"], "no host"),
        (["ssh", "-p", "x", "h"], "invalid port"),
        (["ssh", "-p", "70000", "h"], "invalid port"),
        (["ssh", "h", "-p"], "needs a value"),
        (["ssh", "h", "uptime"], "unexpected word 'uptime'"),
        (["ssh", "-Z", "h"], "unknown ssh option"),
        (["ssh", "@h"], "empty user"),
        (["ssh 'unclosed"], "cannot split"),
    ],
)
def test_parse_login_errors(words: list[str], message: str) -> None:
    with pytest.raises(GlmopsError, match=message):
        parse_login(words)


def test_add_creates_the_file_and_is_idempotent(tmp_path: Path) -> None:
    added = glmops("inventory", "add", "autodl", "--group", "gpu", "--", *AUTODL, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "added autodl in inventory/hosts.yml (group gpu)" in added.stdout
    path = tmp_path / "inventory/hosts.yml"  # the default file, created with its folder
    inventory = load_inventory([str(path)])
    assert inventory.host_vars("autodl") == {"ansible_host": "region-9.autodl.com", "ansible_port": 12345, "ansible_user": "root"}
    assert inventory.group_names("autodl") == ["gpu"]
    text = path.read_text()
    again = glmops("inventory", "add", "autodl", "--group", "gpu", "--", *AUTODL, cwd=tmp_path)
    assert again.returncode == 0 and "nothing changed" in again.stdout and path.read_text() == text
    assert not [p for p in path.parent.iterdir() if p.name != "hosts.yml"]  # no temporary files left


def test_add_keeps_comments_and_order_and_shows_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", """
        # my rented machines
        all:
          vars:
            model_root: /root/autodl-tmp   # data disk
          children:
            gpu:  # 3090s
              hosts:
                old: {ansible_host: 1.2.3.4}
                autodl:
                  ansible_host: region-9.autodl.com
                  ansible_port: "12345"
                  ansible_user: root
                  gpu_count: 1  # keep me
            cpu:
              hosts:
                box:
        """)
    os.chmod(path, 0o640)
    same = glmops("inventory", "add", "autodl", "-i", str(path), "--", *AUTODL)
    assert "nothing changed" in same.stdout  # "12345" in the file is the same port
    moved = glmops("inventory", "add", "autodl", "-i", str(path), "--", "ssh", "-p", "23456", "root@region-9.autodl.com")
    assert moved.returncode == 0, moved.stderr
    assert "updated autodl" in moved.stdout and "ansible_port: 12345 -> 23456" in moved.stdout
    text = path.read_text()
    for kept in ("# my rented machines", "# data disk", "# 3090s", "# keep me", "old: {ansible_host: 1.2.3.4}"):
        assert kept in text
    assert text.index("old:") < text.index("autodl:") < text.index("cpu:")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the atomic write keeps the file's mode
    inventory = load_inventory([str(path)])
    assert inventory.host_vars("autodl")["ansible_port"] == 23456 and inventory.host_vars("autodl")["gpu_count"] == 1
    no_port = glmops("inventory", "add", "autodl", "-i", str(path), "--", "ssh", "root@region-9.autodl.com")
    assert "ansible_port: 23456 -> (removed)" in no_port.stdout
    assert "ansible_port" not in load_inventory([str(path)]).host_vars("autodl")


def test_add_to_existing_top_level_group_and_new_group(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", "gpu:  # top-level group\n  hosts:\n    a: {ansible_host: h1}\n")
    assert glmops("inventory", "add", "b", "-g", "gpu", "-i", str(path), "--", "ssh", "root@h2").returncode == 0
    assert glmops("inventory", "add", "c", "-g", "cpu", "-i", str(path), "--", "ssh", "-i", "~/.ssh/id_c", "u@h3").returncode == 0
    assert glmops("inventory", "add", "d", "-i", str(path), "--key", "/keys/d", "--", "ssh", "h4").returncode == 0
    inventory = load_inventory([str(path)])
    assert inventory.select("gpu") == ["a", "b"] and inventory.select("cpu") == ["c"] and inventory.select("ungrouped") == ["d"]
    assert inventory.host_vars("c")["ansible_ssh_private_key_file"] == "~/.ssh/id_c"
    assert inventory.host_vars("d") == {"ansible_host": "h4", "ansible_ssh_private_key_file": "/keys/d"}
    assert path.read_text().count("gpu:") == 1 and "# top-level group" in path.read_text()
    joined = glmops("inventory", "add", "a", "-g", "cpu", "-i", str(path), "--", "ssh", "h1")
    assert "group: (not set) -> cpu" in joined.stdout
    assert load_inventory([str(path)]).group_names("a") == ["gpu", "cpu"]


def test_add_notes_ignored_options(tmp_path: Path) -> None:
    result = glmops("inventory", "add", "t", "-i", str(tmp_path / "h.yml"), "--", "ssh -CNg -L 6006:127.0.0.1:6006 root@host -p 2")
    assert result.returncode == 0 and "ignored ssh option -L 6006:127.0.0.1:6006" in result.stderr
    assert load_inventory([str(tmp_path / "h.yml")]).host_vars("t") == {"ansible_host": "host", "ansible_port": 2, "ansible_user": "root"}


def test_add_password_prompt_keeps_it_private(tmp_path: Path) -> None:
    import subprocess
    import sys

    from helpers import ROOT

    path = tmp_path / "h.yml"
    result = subprocess.run([sys.executable, "-m", "glmops", "inventory", "add", "pw", "-i", str(path), "--password-prompt", "--", *AUTODL],
                            input="hunter2-secret\n", capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr and "ansible_password: (not set) -> ********" in result.stdout
    assert load_inventory([str(path)]).host_vars("pw")["ansible_password"] == "hunter2-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("all:\n  hosts:\n    x: 1.2.3.4\n", [], ":3:5: field 'x': host 'x' must be a mapping"),
        ("all:\n  hosts: [\n", [], "YAML syntax error"),
        ("all:\n  hostz:\n", [], ":2:3: field 'hostz': unknown key"),
        (None, ["bad name"], "invalid host name"),
        (None, ["ok", "-g", "a b"], "invalid group name"),
        (None, ["ok", "--", "ssh", "-p"], "needs a value"),
        (None, ["ok", "--", "ssh", "-p", "99999", "h"], "invalid port"),
    ],
)
def test_add_errors_are_clear(tmp_path: Path, content: str | None, args: list[str], message: str) -> None:
    path = tmp_path / "hosts.yml"
    if content is not None:
        path.write_text(content)
    full = args if args else ["x", "--", "ssh", "h"]
    if args and "--" not in args:
        full = [*args, "--", "ssh", "h"]
    result = glmops("inventory", "add", *full[:1], "-i", str(path), *full[1:])
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr and "ERROR" in result.stderr
    if content is not None:
        assert path.read_text() == content  # a broken file is left alone


def test_list_table_json_pattern_and_secrets(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", """
        all:
          vars:
            hf_token: tok-123456
            nested: {api_key: key-abcdef, plain: visible-value}
          children:
            gpu:
              hosts:
                box:
                  ansible_host: 1.2.3.4
                  ansible_port: 2200
                  ansible_user: root
                  ansible_password: pw-very-secret
                  db_passwd: pw2-secret
                  my_secret: s3-secret
            local:
              hosts:
                laptop: {ansible_connection: local}
        """)
    shown = glmops("inventory", "list", "-i", str(path))
    as_json = glmops("inventory", "list", "-i", str(path), "--json")
    assert shown.returncode == 0 and as_json.returncode == 0, shown.stderr + as_json.stderr
    for output in (shown.stdout, as_json.stdout):
        for secret in ("pw-very-secret", "pw2-secret", "s3-secret", "tok-123456", "key-abcdef"):
            assert secret not in output
    box_line = next(line for line in shown.stdout.splitlines() if line.strip().startswith("box"))
    for cell in ("gpu", "ssh", "1.2.3.4", "2200", "root", "password ********"):
        assert cell in box_line
    assert "local" in next(line for line in shown.stdout.splitlines() if "laptop" in line)
    rows = {row["host"]: row for row in json.loads(as_json.stdout)}
    assert rows["box"]["groups"] == ["gpu"] and rows["box"]["port"] == 2200 and rows["box"]["vars"]["hf_token"] == "********"
    assert rows["box"]["vars"]["nested"] == {"api_key": "********", "plain": "visible-value"}
    assert rows["laptop"]["connection"] == "local" and rows["laptop"]["port"] is None
    only_gpu = json.loads(glmops("inventory", "list", "gpu", "-i", str(path), "--json").stdout)
    assert [row["host"] for row in only_gpu] == ["box"]


def test_list_several_sources_and_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", "all:\n  hosts:\n    a:\n")
    both = json.loads(glmops("inventory", "list", "-i", str(path), "-i", "b:2222,", "--json").stdout)
    assert [(row["host"], row["port"]) for row in both] == [("a", 22), ("b", 2222)]
    missing = glmops("inventory", "list", cwd=tmp_path)  # default inventory/hosts.yml is absent
    assert missing.returncode == 3 and "inventory/hosts.yml: inventory not found" in missing.stderr and "Traceback" not in missing.stderr
    broken = write(tmp_path / "bad.yml", "all:\n  hosts:\n    web1:\n      ansible_port: abc\n")
    result = glmops("inventory", "list", "-i", str(broken))
    assert result.returncode == 3 and "bad.yml:4:7: field 'ansible_port'" in result.stderr and "Traceback" not in result.stderr
    nothing = glmops("inventory", "list", "nomatch", "-i", str(path))
    assert nothing.returncode == 1 and "no host matches 'nomatch'" in nothing.stderr


def test_shipped_autodl_example_round_trips(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parent.parent / "inventory" / "autodl.yml"
    copy = tmp_path / "autodl.yml"
    copy.write_text(source.read_text())
    result = glmops("inventory", "add", "autodl", "-g", "autodl", "-i", str(copy), "--", "ssh", "-p", "40000", "root@region-3.autodl.com")
    assert result.returncode == 0, result.stderr
    inventory = load_inventory([str(copy)])
    assert inventory.host_vars("autodl")["ansible_port"] == 40000
    assert [line for line in copy.read_text().splitlines() if line.lstrip().startswith("#")] == \
        [line for line in source.read_text().splitlines() if line.lstrip().startswith("#")]
