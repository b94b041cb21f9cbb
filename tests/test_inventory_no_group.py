"""`glmops inventory add` without --group (issue 18, item 5): a host that lands in no group is deployed
to by none of the shipped playbooks (each targets its group), so the command says which group it is
not in and the command line that fixes it; that line works."""

from __future__ import annotations

import shlex
from pathlib import Path

from helpers import glmops

from glmops.inventory import load_inventory

LOGIN = ["--", "ssh", "-p", "12345", "root@region-9.autodl.com"]


def _note(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("note: ")), "")


def test_no_group_names_the_playbook_group_and_the_fix(tmp_path: Path) -> None:
    inv = tmp_path / "autodl.yml"
    added = glmops("inventory", "add", "autodl-3090", "-i", str(inv), *LOGIN)
    assert added.returncode == 0, added.stderr
    note = _note(added.stderr)
    assert "autodl-3090 is in no group" in note and "autodl.yml: autodl" in note and "cpu.yml: cpu" in note, added.stderr
    fix = note.split("group: ", 1)[1].split("   (or", 1)[0]
    assert fix == f"glmops inventory add autodl-3090 --group autodl -i {inv} -- ssh -p 12345 root@region-9.autodl.com"
    fixed = glmops(*shlex.split(fix)[1:])
    assert fixed.returncode == 0 and not _note(fixed.stderr), fixed.stderr
    assert load_inventory([str(inv)]).group_names("autodl-3090") == ["autodl"]
    again = glmops("inventory", "add", "autodl-3090", "-i", str(inv), *LOGIN)
    assert again.returncode == 0 and not _note(again.stderr), "a host already in a group needs no note"


def test_the_inventory_file_name_picks_the_group(tmp_path: Path) -> None:
    added = glmops("inventory", "add", "box", "-i", str(tmp_path / "cpu.yml"), *LOGIN)
    assert "--group cpu " in _note(added.stderr), added.stderr


def test_with_group_no_note(tmp_path: Path) -> None:
    added = glmops("inventory", "add", "box", "--group", "mac", "-i", str(tmp_path / "hosts.yml"), *LOGIN)
    assert added.returncode == 0 and not _note(added.stderr), added.stderr
