"""Every shipped playbook that targets this machine runs twice; the second run changes nothing (as Molecule checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import ROOT, glmops, recap

LOCAL_INVENTORY = ROOT / "inventory" / "localhost.yml"


def local_playbooks() -> list[Path]:
    books = []
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        plays = yaml.safe_load(path.read_text()) or []
        if plays and all(str(p.get("hosts")) in ("local", "localhost") for p in plays if isinstance(p, dict)):
            books.append(path)
    return books


def test_there_is_a_local_example() -> None:
    assert ROOT / "playbooks" / "example.yml" in local_playbooks()


@pytest.mark.parametrize("playbook", local_playbooks(), ids=lambda p: p.name)
def test_second_run_changes_nothing(playbook: Path) -> None:
    first = glmops("run", str(playbook), "-i", str(LOCAL_INVENTORY), "--json", timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    second = glmops("run", str(playbook), "-i", str(LOCAL_INVENTORY), "--json", timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    for host, stats in recap(second.stdout).items():
        assert stats["changed"] == 0, f"{playbook.name}: second run changed something on {host}: {stats}"
        assert stats["failed"] == 0
    check = glmops("run", str(playbook), "-i", str(LOCAL_INVENTORY), "--json", "--check", timeout=600)
    assert check.returncode == 0 and all(s["changed"] == 0 for s in recap(check.stdout).values())
