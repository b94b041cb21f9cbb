"""Two engine features the deploy playbooks rely on: `hosts:` as a template rendered with the extra
vars (`-e target=...`, as in Ansible), and `environment:` as one template that gives a mapping."""

from __future__ import annotations

from pathlib import Path

from helpers import glmops, recap, results, write

INVENTORY = """
all:
  children:
    autodl:
      hosts:
        a1: {ansible_connection: local}
    other:
      hosts:
        o1: {ansible_connection: local}
"""

PLAYBOOK = """
- name: Targets
  hosts: "{{ target | default('autodl') }}"
  gather_facts: false
  vars:
    proxy_env: {GLMOPS_TEST_PROXY: "http://10.0.0.7:1"}
  tasks:
    - name: Show the proxy
      command: printenv GLMOPS_TEST_PROXY
      environment: "{{ proxy_env }}"
      changed_when: false
"""


def test_hosts_template_defaults_and_extra_var(tmp_path: Path) -> None:
    inventory = write(tmp_path / "inv.yml", INVENTORY)
    playbook = write(tmp_path / "p.yml", PLAYBOOK)
    default = glmops("run", str(playbook), "-i", str(inventory), "--json")
    assert default.returncode == 0, default.stdout + default.stderr
    assert set(recap(default.stdout)) == {"a1"}
    assert results(default.stdout, "Show the proxy")["a1"]["result"]["stdout"] == "http://10.0.0.7:1"
    other = glmops("run", str(playbook), "-i", str(inventory), "-e", "target=other", "--json")
    assert set(recap(other.stdout)) == {"o1"}


def test_hosts_template_matching_nothing_is_a_load_error(tmp_path: Path) -> None:
    inventory = write(tmp_path / "inv.yml", INVENTORY)
    playbook = write(tmp_path / "p.yml", PLAYBOOK)
    run = glmops("run", str(playbook), "-i", str(inventory), "-e", "target=nosuch")
    assert run.returncode == 3
    assert "host pattern 'nosuch' matches no host" in run.stdout + run.stderr


def test_environment_template_must_give_a_mapping(tmp_path: Path) -> None:
    inventory = write(tmp_path / "inv.yml", INVENTORY)
    playbook = write(tmp_path / "p.yml", PLAYBOOK.replace('proxy_env: {GLMOPS_TEST_PROXY: "http://10.0.0.7:1"}', "proxy_env: just-text"))
    run = glmops("run", str(playbook), "-i", str(inventory), "--json")
    assert run.returncode == 2
    assert "'environment' must give a mapping" in results(run.stdout, "Show the proxy")["a1"]["msg"]
