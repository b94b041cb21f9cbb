"""setup: gather facts about the host in one command (OS, CPU, memory, disks, Python, GPUs)."""

from __future__ import annotations

from typing import Any

from glmops.modules._facts import END, gather_script, parse_output
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

GATHER = gather_script()


def parse_facts(text: str) -> dict[str, Any]:
    """Turn GATHER's output into Ansible-style facts (without the ansible_ prefix)."""
    return parse_output(text)


class SetupModule(Module):
    name = "setup"
    doc = (
        "Gather facts about the host with one command: ansible_hostname, ansible_fqdn, ansible_system, "
        "ansible_kernel, ansible_architecture, ansible_distribution(_version), ansible_os_family, "
        "ansible_processor_vcpus, ansible_memtotal_mb, ansible_memfree_mb, ansible_mounts (size_total, "
        "size_available per mount), ansible_python, ansible_user_id, ansible_user_dir, and ansible_gpus "
        "(index, name, memory_total_mb, memory_used_mb, driver_version per NVIDIA GPU; empty without one). "
        "The same values are under ansible_facts without the prefix. Runs automatically (lazily) when a "
        "play gathers facts."
    )
    args = {
        "gather_subset": Arg("list", help="Accepted for Ansible compatibility; all facts are gathered (one command)."),
        "filter": Arg("list", help="Only keep facts whose names match these shell-style patterns."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        result = ctx.conn.run(GATHER)
        if END not in result.stdout:
            return ModuleResult(failed=True, msg=f"gathering facts failed: {result.stderr.strip()}")
        facts = parse_facts(result.stdout)
        if args.get("filter"):
            from fnmatch import fnmatch

            facts = {k: v for k, v in facts.items() if any(fnmatch(k, p) or fnmatch("ansible_" + k, p) for p in args["filter"])}
        out: dict[str, Any] = {"ansible_facts": facts}
        out.update({f"ansible_{k}": v for k, v in facts.items()})
        return ModuleResult(facts=out, data={"ansible_facts": facts})


MODULE = SetupModule
