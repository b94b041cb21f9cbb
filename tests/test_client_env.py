"""Where the clients' `.env` (with the API key) goes: the last play of the shipped playbooks (the
client_env role), run for real on the controller. The target pattern names no host, so only the
wheel play and the .env play run; the working directory is a git work tree (as a checkout is), and
nothing may land in it unless asked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, glmops, recap


@pytest.fixture
def place(tmp_path: Path) -> dict[str, Path]:
    """A home, a config folder, a git work tree to run from, an inventory with a `local` group."""
    paths = {"home": tmp_path / "home", "xdg": tmp_path / "xdg", "proj": tmp_path / "proj", "inv": tmp_path / "inventory.yml"}
    paths["home"].mkdir()
    paths["proj"].mkdir()
    subprocess.run(["git", "init", "-q", str(paths["proj"])], check=True)
    paths["inv"].write_text(yaml.safe_dump({"all": {"children": {"local": {"hosts": {"my-box": {"ansible_connection": "local"}}}}}}))
    return paths


def _run(place: dict[str, Path], *extra: str, xdg: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(place["home"]), "PWD": str(place["proj"])}
    env["XDG_CONFIG_HOME"] = str(place["xdg"]) if xdg else ""  # empty: unset, as the XDG spec reads it
    full = {**os.environ, **env}
    run = glmops("run", str(ROOT / "playbooks" / "local.yml"), "-i", str(place["inv"]), "--json", "--start-at-task", "Create the folder of the .env (private when new)", *extra,
                 cwd=place["proj"], env=full, timeout=300)
    failed = [e for e in events(run.stdout) if e["event"] == "host_result" and e["status"] == "failed"]
    assert run.returncode == 0 and not failed, (failed, run.stderr[-2000:])
    return run


def _messages(run: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(str(e.get("msg", "")) for e in events(run.stdout) if e["event"] == "host_result" and e["task"] == "The clients' settings")


def _env_file(path: Path) -> dict[str, Any]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_default_is_the_config_folder_private_and_printed(place: dict[str, Path]) -> None:
    run = _run(place)
    env_file = place["xdg"] / "glmops" / "my-box.env"
    assert _env_file(env_file) == {"ZHIPU_API_KEY": "EMPTY", "ZHIPU_BASE_URL": "http://127.0.0.1:6006/v1",
                                   "OPENAI_API_KEY": "EMPTY", "OPENAI_BASE_URL": "http://127.0.0.1:6006/v1"}
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert oct(env_file.parent.stat().st_mode & 0o777) == "0o700"
    assert list(place["proj"].iterdir()) == [place["proj"] / ".git"], "nothing is written into the work tree glmops runs from"
    assert str(env_file) in _messages(run) and "WARNING" not in _messages(run)
    again = _run(place)
    assert sum(host["changed"] for host in recap(again.stdout).values()) == 0


def test_without_xdg_config_home_it_is_home_dot_config(place: dict[str, Path]) -> None:
    _run(place, xdg=False)
    assert (place["home"] / ".config" / "glmops" / "my-box.env").is_file()
    assert list(place["proj"].iterdir()) == [place["proj"] / ".git"]


def test_asked_into_a_work_tree_warns_unless_git_ignores_it(place: dict[str, Path]) -> None:
    wanted = place["proj"] / "configs" / "API.env"
    run = _run(place, "-e", f"client_env_file={wanted}")
    assert _env_file(wanted)["OPENAI_BASE_URL"] == "http://127.0.0.1:6006/v1"
    assert oct(wanted.stat().st_mode & 0o777) == "0o600"
    assert "WARNING" in _messages(run) and "not ignored by git" in _messages(run) and str(wanted) in _messages(run)
    (place["proj"] / ".gitignore").write_text("configs/API.env\n")
    quiet = _run(place, "-e", f"client_env_file={wanted}")
    assert "WARNING" not in _messages(quiet) and str(wanted) in _messages(quiet)
    assert not (place["xdg"] / "glmops").exists()
