"""add_host: add a host (and its variables and groups) to this run's inventory, for later plays."""

from __future__ import annotations

from typing import Any

from glmops.errors import ArgumentError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

_OWN = ("name", "host", "hostname", "groups", "group", "groupname")


class AddHostModule(Module):
    name = "add_host"
    doc = (
        "Add a host to this run's inventory (`name`, `HOST:PORT` sets its port) in `groups`, with every other "
        "argument as a host variable (`ansible_host: 10.0.0.5`), for later plays. Returns `add_host` "
        "(host_name, groups, host_vars); changed, as Ansible."
    )
    on_controller = True
    any_args = True  # every argument that is not name/groups is a host variable
    args = {
        "name": Arg("str", required=True, aliases=("host", "hostname"), help="The host's name (HOST or HOST:PORT)."),
        "groups": Arg("list", elements="str", default=[], aliases=("group", "groupname"), help="Groups to put it in."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if not str(args["name"]).strip():
            raise ArgumentError("add_host needs a host name", field="name")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        name = str(args["name"]).strip()
        host_vars = {k: v for k, v in args.items() if k not in _OWN}
        if name.count(":") == 1:
            name, _, port = name.partition(":")
            if not port.isdigit():
                return ModuleResult(failed=True, msg=f"invalid port in host name {args['name']!r}")
            host_vars["ansible_ssh_port"] = int(port)
            host_vars.setdefault("ansible_port", int(port))
        groups = [g.strip() for item in args["groups"] for g in str(item).split(",") if g.strip()]
        # The runner reads add_host and changes the run's inventory.
        return ModuleResult(changed=True, data={"add_host": {"host_name": name, "groups": groups, "host_vars": host_vars}})


MODULE = AddHostModule
