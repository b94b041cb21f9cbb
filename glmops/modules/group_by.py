"""group_by: put the host into a group made from a key (`key: "gpu_{{ gpu_count }}"`), for later plays."""

from __future__ import annotations

from typing import Any

from glmops.errors import ArgumentError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class GroupByModule(Module):
    name = "group_by"
    doc = (
        "Add the host to the group named `key` (created when missing, under `parents`), in this run's "
        "inventory: later plays can target it. Returns `add_group` and `parent_groups`; changed, as Ansible."
    )
    on_controller = True
    args = {
        "key": Arg("str", required=True, help="The group name (usually a template)."),
        "parents": Arg("list", elements="str", default=["all"], help="The groups the new group goes under."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if not str(args["key"]).strip() or any(c in str(args["key"]) for c in " :,!&"):
            raise ArgumentError(f"invalid group name {args['key']!r}", field="key",
                                hint="a group name has no spaces and none of : , ! & (they are pattern syntax)")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        # The runner reads add_group/parent_groups and changes the run's inventory.
        return ModuleResult(changed=True, data={"add_group": str(args["key"]).strip(), "parent_groups": args["parents"]})


MODULE = GroupByModule
