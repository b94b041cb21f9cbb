"""group: make sure a local group exists (with a gid) or does not (Linux: groupadd/groupmod/groupdel)."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan


def read_group(ctx: ModuleContext, name: str) -> dict[str, Any] | None:
    """The group's gid and members from `getent group`, or None when there is no such group."""
    done = ctx.run(f"getent group -- {shlex.quote(name)} || true")
    line = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    if not line:
        return None
    fields = line.split(":")
    return {"gid": int(fields[2]), "members": [m for m in fields[3].split(",") if m] if len(fields) > 3 else []}


class GroupModule(Module):
    name = "group"
    doc = (
        "Make sure a local group is present (with `gid`) or absent, with groupadd/groupmod/groupdel "
        "(Linux). Reads the group with `getent` first and changes only what differs; check mode and "
        "become as usual. Returns name, state, gid, system."
    )
    args = {
        "name": Arg("str", required=True, word=True, help="The group's name."),
        "state": Arg("str", default="present", choices=("present", "absent"), help="present or absent."),
        "gid": Arg("int", help="The group id."),
        "system": Arg("bool", default=False, help="Create a system group (groupadd -r)."),
        "non_unique": Arg("bool", default=False, help="Allow a gid another group already has (-o)."),
        "force": Arg("bool", default=False, help="Accepted for Ansible compatibility (groupdel -f where supported)."),
        "local": Arg("bool", default=False, help="Accepted for Ansible compatibility (always local files)."),
    }

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        name = args["name"]
        current = read_group(ctx, name)
        result = ModuleResult()
        quoted = shlex.quote(name)
        if args["state"] == "absent":
            result.data = {"name": name, "state": "absent"}
            if current is not None:
                yield Change(command=f"groupdel {'-f ' if args['force'] else ''}-- {quoted}", failure=f"cannot delete group {name}")
            return result
        gid_opt = f"-g {int(args['gid'])} " + ("-o " if args["non_unique"] else "") if args.get("gid") is not None else ""
        done = None
        if current is None:
            done = yield Change(command=f"groupadd {gid_opt}{'-r ' if args['system'] else ''}-- {quoted}",
                                failure=f"cannot create group {name}")
        elif args.get("gid") is not None and current["gid"] != args["gid"]:
            done = yield Change(command=f"groupmod {gid_opt}-- {quoted}", failure=f"cannot change group {name}")
        after = read_group(ctx, name) if done is not None and done.ok and done.ran else current
        gid = after["gid"] if after else args.get("gid")
        result.data = {"name": name, "state": "present", "system": args["system"], "gid": gid}
        return result


MODULE = GroupModule
