"""Inventory: the YAML format, group_vars/host_vars, precedence, patterns, and the inventory command."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import glmops, write

from glmops.commands.inventory import parse_login
from glmops.errors import GlmopsError
from glmops.inventory import load_inventory


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    write(tmp_path / "group_vars/all.yml", "who: all\nfrom_all: 1\n")
    write(tmp_path / "group_vars/gpu/main.yml", "who: gpu\n")
    write(tmp_path / "host_vars/box2.yml", "who: box2-file\n")
    return write(tmp_path / "hosts.yml", """
        all:
          vars: {who: inline-all, level: all}
          hosts:
            laptop:
              ansible_connection: local
          children:
            autodl:
              vars: {level: autodl}
              children:
                gpu:
                  vars: {level: gpu}
                  hosts:
                    box1: {ansible_host: 10.0.0.1, ansible_port: 2201}
                    box2:
            cpu:
              hosts:
                box3:
        """)


def test_structure_and_group_membership(inv: Path) -> None:
    inventory = load_inventory([str(inv)])
    assert list(inventory.hosts) == ["laptop", "box1", "box2", "box3"]
    assert inventory.group_names("box1") == ["autodl", "gpu"]
    assert inventory.group_names("laptop") == []
    assert inventory.groups["ungrouped"].hosts == ["laptop"]


def test_variable_precedence(inv: Path) -> None:
    inventory = load_inventory([str(inv)])
    box1 = inventory.host_vars("box1")
    assert box1["level"] == "gpu"  # child group beats parent, parent beats all
    assert box1["who"] == "gpu"  # group_vars/gpu beats all
    assert box1["from_all"] == 1 and box1["ansible_port"] == 2201
    assert inventory.host_vars("box2")["who"] == "box2-file"  # host_vars beat group vars
    assert inventory.host_vars("box3")["level"] == "all"


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("all", ["laptop", "box1", "box2", "box3"]),
        ("*", ["laptop", "box1", "box2", "box3"]),
        ("autodl", ["box1", "box2"]),
        ("gpu:cpu", ["box1", "box2", "box3"]),
        ("gpu,cpu", ["box1", "box2", "box3"]),
        ("all:!autodl", ["laptop", "box3"]),
        ("autodl:&box2", ["box2"]),
        ("box*", ["box1", "box2", "box3"]),
        ("nothing", []),
    ],
)
def test_patterns(inv: Path, pattern: str, expected: list[str]) -> None:
    assert load_inventory([str(inv)]).select(pattern) == expected


def test_adhoc_list_and_implicit_localhost() -> None:
    inventory = load_inventory(["h1,h2:2222,"])
    assert inventory.select("all") == ["h1", "h2"] and inventory.host_vars("h2")["ansible_port"] == 2222
    empty = load_inventory([])
    assert empty.select("localhost") == ["localhost"] and empty.host_vars("localhost")["ansible_connection"] == "local"


def test_group_cycle_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n")
    with pytest.raises(GlmopsError, match="cycle"):
        load_inventory([str(path)])


@pytest.mark.parametrize(
    "words, expected",
    [
        (["ssh", "-p", "12345", "root@region-9.autodl.com"], ("root", "region-9.autodl.com", 12345, None)),
        (["ssh", "root@region-9.autodl.com", "-p", "12345"], ("root", "region-9.autodl.com", 12345, None)),
        (["ssh -p 2222 -i ~/.ssh/k user@h"], ("user", "h", 2222, "~/.ssh/k")),
        (["ssh", "ssh://u@h:2200"], ("u", "h", 2200, None)),
        (["ssh", "-o", "StrictHostKeyChecking=no", "-l", "me", "host"], ("me", "host", None, None)),
    ],
)
def test_parse_login_line(words: list[str], expected: tuple) -> None:
    line = parse_login(words)
    assert (line.user, line.host, line.port, line.key) == expected


def test_parse_login_errors() -> None:
    with pytest.raises(GlmopsError, match="no host"):
        parse_login(["ssh", "-p", "22"])
    with pytest.raises(GlmopsError, match="invalid port"):
        parse_login(["ssh", "-p", "x", "h"])


def test_inventory_add_keeps_comments_and_is_idempotent(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", "# my rented machines\nall:\n  children:\n    gpu:  # 3090s\n      hosts:\n        old: {ansible_host: 1.2.3.4}\n")
    added = glmops("inventory", "add", "autodl", "-g", "gpu", "-i", str(path), "--", "ssh", "-p", "12345", "root@region-9.autodl.com")
    assert added.returncode == 0, added.stderr
    assert "added autodl" in added.stdout
    text = path.read_text()
    assert "# my rented machines" in text and "# 3090s" in text
    inventory = load_inventory([str(path)])
    assert inventory.host_vars("autodl") == {"ansible_host": "region-9.autodl.com", "ansible_port": 12345, "ansible_user": "root"}
    assert inventory.group_names("autodl") == ["gpu"]
    again = glmops("inventory", "add", "autodl", "-g", "gpu", "-i", str(path), "--", "ssh", "-p", "12345", "root@region-9.autodl.com")
    assert "nothing changed" in again.stdout and path.read_text() == text
    moved = glmops("inventory", "add", "autodl", "-g", "gpu", "-i", str(path), "--", "ssh", "-p", "23456", "root@region-9.autodl.com")
    assert "ansible_port: 12345 -> 23456" in moved.stdout
    bad = glmops("inventory", "add", "x", "-i", str(path), "--", "ssh", "-p")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "needs a value" in bad.stderr


def test_inventory_list_hides_secrets(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yml", "all:\n  hosts:\n    box:\n      ansible_host: 1.2.3.4\n      ansible_password: pw-very-secret\n      hf_token: tok-123456\n")
    shown = glmops("inventory", "list", "-i", str(path))
    as_json = glmops("inventory", "list", "-i", str(path), "--json")
    assert shown.returncode == 0 and "box" in shown.stdout and "1.2.3.4" in shown.stdout
    for output in (shown.stdout, as_json.stdout):
        assert "pw-very-secret" not in output and "tok-123456" not in output
    assert "********" in as_json.stdout


def test_shipped_inventories_load() -> None:
    root = Path(__file__).resolve().parent.parent / "inventory"
    for path in root.glob("*.yml"):
        load_inventory([str(path)])
