"""The deploy roles' defaults name the paths glmops.layout names (the day-2 commands find a
deployment through Layout.from_hostvars); every role variable is documented; every playbook loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jinja2 import Environment

from glmops.layout import Layout
from helpers import ROOT, glmops

ROLES = ROOT / "roles"


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())


def _render(value: str, variables: dict) -> str:
    """Render a default that refers to other defaults (deploy_dir, ...), as the engine does."""
    env = Environment()
    for _ in range(5):
        if "{{" not in str(value):
            break
        value = env.from_string(str(value)).render(**variables)
    return str(value)


@pytest.mark.parametrize("deploy_dir", [None, "/root/autodl-tmp/glmops"])
def test_role_defaults_name_the_layout_paths(deploy_dir: str | None) -> None:
    layout = Layout.from_hostvars({"deploy_dir": deploy_dir} if deploy_dir else {})
    variables: dict = {}
    for role in ("python_env", "model", "api_server"):
        variables.update(_defaults(role))
    if deploy_dir:
        variables["deploy_dir"] = deploy_dir
    assert _defaults("api_server")["deploy_dir"] == _defaults("python_env")["deploy_dir"] == "/opt/glmops" == Layout().deploy_dir
    assert _defaults("api_server")["api_port"] == Layout().api_port and _defaults("api_server")["api_host"] == Layout().api_host
    expected = {"venv_dir": layout.venv, "server_config": layout.config, "server_run_dir": layout.run_dir,
                "server_pid_file": layout.pid_file, "server_log_file": layout.log_file, "models_dir": layout.models_dir}
    assert {name: _render(variables[name], variables) for name in expected} == expected
    assert _render("{{ venv_dir }}/bin/glmops", variables) == layout.glmops


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists()))
def test_every_default_is_documented(role: str) -> None:
    """Each variable in defaults/main.yml has a comment above it (a comment may cover the block of
    variables right below it, up to the next blank line)."""
    lines = (ROLES / role / "defaults" / "main.yml").read_text().splitlines()
    assert lines[0].startswith("#"), f"{role}: defaults/main.yml starts with what the role does"
    documented = False
    for number, line in enumerate(lines, 1):
        if line.startswith("#"):
            documented = True
        elif not line.strip():
            documented = False
        elif not line.startswith(" ") and ":" in line:
            assert documented, f"roles/{role}/defaults/main.yml:{number}: {line.split(':')[0]} has no comment"


@pytest.mark.parametrize("name", ["autodl", "cpu", "mac", "multigpu", "local"])
def test_playbooks_and_inventory_examples_load(name: str, tmp_path: Path) -> None:
    """Load each playbook with its example inventory (addresses moved to loopback, and a tag that no task
    has, so nothing runs): everything parses, every host pattern matches."""
    data = yaml.safe_load((ROOT / "inventory" / f"{name}.yml").read_text())
    for group in data["all"]["children"].values():
        for host in group["hosts"].values():
            if host.get("ansible_host"):
                host["ansible_host"] = "127.0.0.1"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    run = glmops("run", str(ROOT / "playbooks" / f"{name}.yml"), "-i", str(inventory), "--tags", "nothing-has-this-tag", "--json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_roles_agree_on_shared_defaults() -> None:
    """All roles' defaults are merged into one namespace: a variable two roles define must mean the same."""
    seen: dict[str, dict[str, str]] = {}
    for path in sorted(ROLES.glob("*/defaults/main.yml")):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            seen.setdefault(name, {})[path.parent.parent.name] = str(value)
    clashes = {name: roles for name, roles in seen.items() if len(set(roles.values())) > 1}
    assert not clashes, clashes
