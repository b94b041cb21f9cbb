"""Shell completion through the real `glmops` (click's `_GLMOPS_COMPLETE`): subcommand names from the
lazy command group, and host names from the inventory for every command that takes a HOST."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, glmops, inventory, write


def complete(words: str, tmp_path: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> list[str]:
    """The values `glmops` offers for the last word of `words` (an empty last word when it ends in a space)."""
    parts = words.split(" ")
    full_env = {"COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1), "_GLMOPS_COMPLETE": "bash_complete",
                "GLMOPS_INVENTORY": "", "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state"),
                **(env or {})}
    result = glmops(cwd=cwd or tmp_path, env=full_env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # never a traceback
    lines = [line for line in result.stdout.splitlines() if line]
    assert all(line.startswith("plain,") for line in lines), lines
    return [line.split(",", 1)[1] for line in lines]


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    return inventory(tmp_path / "inv.yml", {"autodl-3090": {"ansible_host": "region-9.autodl.com", "ansible_port": 12345},
                                            "autodl-4090": {}, "cpu-box": {}},
                     groups={"autodl": ["autodl-3090", "autodl-4090"], "cpu": ["cpu-box"]})


def test_subcommand_names_from_the_lazy_group(tmp_path: Path) -> None:
    assert complete("glmops st", tmp_path) == ["status", "stop"]
    from glmops.cli import COMMANDS

    assert complete("glmops ", tmp_path) == list(COMMANDS)  # every command, in the help's order
    assert {"run", "up", "down", "status", "chat"} <= set(COMMANDS)
    assert complete("glmops tunnel s", tmp_path) == ["status", "stop"]


@pytest.mark.parametrize("command", ["logs", "stop", "restart", "facts", "doctor", "chat", "tunnel open"])
def test_host_names_from_the_inventory_given_with_i(command: str, inv: Path, tmp_path: Path) -> None:
    assert complete(f"glmops {command} -i {inv} autodl", tmp_path) == ["autodl-3090", "autodl-4090"]
    assert complete(f"glmops {command} -i {inv} ", tmp_path) == ["autodl-3090", "autodl-4090", "cpu-box"]
    assert complete(f"glmops {command} --inventory {inv} c", tmp_path) == ["cpu-box"]
    assert complete(f"glmops {command} -i {inv} x", tmp_path) == []


def test_status_completes_groups_too(inv: Path, tmp_path: Path) -> None:
    assert complete(f"glmops status -i {inv} ", tmp_path) == ["autodl-3090", "autodl-4090", "cpu-box", "autodl", "cpu"]
    assert complete(f"glmops status -i {inv} cp", tmp_path) == ["cpu-box", "cpu"]


def test_chat_completes_the_host_only_as_the_first_word(inv: Path, tmp_path: Path) -> None:
    assert complete(f"glmops chat -i {inv} autodl-3090 ", tmp_path) == []


def test_default_inventories_without_i(inv: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "inventory").mkdir(parents=True)
    inventory(project / "inventory" / "hosts.yml", {"lab-a100": {}})
    assert complete("glmops logs ", tmp_path, cwd=project) == ["lab-a100"]
    # the user's inventory (where `glmops up` records hosts) is read as well
    user = tmp_path / "config" / "glmops" / "inventory.yml"
    user.parent.mkdir(parents=True)
    inventory(user, {"autodl-a": {}})
    assert complete("glmops doctor ", tmp_path, cwd=project) == ["lab-a100", "autodl-a"]
    # $GLMOPS_INVENTORY wins over both, as it does for the commands
    assert complete("glmops logs ", tmp_path, cwd=project, env={"GLMOPS_INVENTORY": str(inv)}) == ["autodl-3090", "autodl-4090", "cpu-box"]


def test_tunnel_stop_offers_the_open_tunnels(tmp_path: Path) -> None:
    states = tmp_path / "state" / "glmops" / "tunnels"
    states.mkdir(parents=True)
    (states / "gpu-a-6006.json").write_text(json.dumps({"pid": os.getpid(), "host": "gpu-a", "local_port": 6006}))
    (states / "broken.json").write_text("{not json")
    assert complete("glmops tunnel stop g", tmp_path) == ["gpu-a"]
    assert (states / "broken.json").exists()  # completion only reads


@pytest.mark.parametrize("text", ["all:\n  hosts: [\n", "all:\n  hosts:\n    box1: 1.2.3.4\n", "\x00\xff"])
def test_a_broken_or_missing_inventory_completes_nothing_without_a_traceback(text: str, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yml", text)
    assert complete(f"glmops logs -i {bad} ", tmp_path) == []
    assert complete(f"glmops logs -i {tmp_path / 'missing.yml'} ", tmp_path) == []
    assert complete("glmops status ", tmp_path) == []  # no inventory at all


def test_bash_source_script_completes_hosts_in_a_real_bash(inv: Path, tmp_path: Path) -> None:
    """What a user's ~/.bashrc does: eval the script click prints, then press Tab (bash's completion function)."""
    bin_dir = tmp_path / "bin"
    launcher = write(bin_dir / "glmops", f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m glmops \"$@\"\n")
    launcher.chmod(0o755)
    script = f"""
        eval "$(_GLMOPS_COMPLETE=bash_source glmops)"
        COMP_WORDS=(glmops tunnel open -i {shlex.quote(str(inv))} autodl-4)
        COMP_CWORD=5
        _glmops_completion glmops
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "GLMOPS_INVENTORY": ""}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["autodl-4090"], (result.stdout, result.stderr)
