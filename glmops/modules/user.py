"""user: make sure a local user account exists with given properties, or does not (Linux shadow tools)."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan


def read_user(ctx: ModuleContext, name: str) -> dict[str, Any] | None:
    """The account from `getent passwd` and its groups from `id`, or None when there is no such user."""
    q = shlex.quote(name)
    done = ctx.run(f"getent passwd -- {q} || exit 0; echo; id -Gn -- {q}; getent group \"$(id -g -- {q})\" | cut -d: -f1")
    lines = done.stdout.splitlines()
    if not lines or not lines[0].strip():
        return None
    fields = lines[0].split(":")
    primary = lines[3].strip() if len(lines) > 3 else ""
    groups = [g for g in (lines[2].split() if len(lines) > 2 else []) if g != primary]
    return {"uid": int(fields[2]), "gid": int(fields[3]), "comment": fields[4], "home": fields[5], "shell": fields[6],
            "group": primary, "groups": groups}


def _csv(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


class UserModule(Module):
    name = "user"
    doc = (
        "Make sure a local user account is present with the given uid, group, groups (`append` adds to them), "
        "shell, home, comment and password hash, or absent (`remove` deletes its home). Uses "
        "useradd/usermod/userdel (Linux); reads the account with getent/id first and changes only what "
        "differs; check mode as usual. Returns Ansible's name, state, uid, group (gid), groups, home, shell, comment."
    )
    args = {
        "name": Arg("str", required=True, word=True, aliases=("user",), help="The login name."),
        "state": Arg("str", default="present", choices=("present", "absent"), help="present or absent."),
        "uid": Arg("int", help="The user id."),
        "group": Arg("str", word=True, help="The primary group (name or gid)."),
        "groups": Arg("list", elements="str", help="Supplementary groups (a list or a comma-separated string)."),
        "append": Arg("bool", default=False, help="Add `groups` to the user's groups instead of replacing them."),
        "shell": Arg("str", word=True, help="The login shell."),
        "home": Arg("path", help="The home directory."),
        "create_home": Arg("bool", default=True, aliases=("createhome",), help="Create the home directory when the user is created."),
        "move_home": Arg("bool", default=False, help="Move the contents when `home` changes (usermod -m)."),
        "system": Arg("bool", default=False, help="Create a system account (useradd -r)."),
        "comment": Arg("str", help="The GECOS field (full name)."),
        "password": Arg("str", no_log=True, help="The password as a crypt(3) hash, as Ansible's (not clear text)."),
        "remove": Arg("bool", default=False, help="With state=absent: delete the home directory too (userdel -r)."),
        "force": Arg("bool", default=False, help="With state=absent: delete even when logged in (userdel -f)."),
        "non_unique": Arg("bool", default=False, help="Allow a uid another user already has (-o)."),
    }

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        name = args["name"]
        q = shlex.quote(name)
        current = read_user(ctx, name)
        result = ModuleResult()
        if args["state"] == "absent":
            result.data = {"name": name, "state": "absent"}
            if current is not None:
                result.data.update(force=args["force"], remove=args["remove"])
                flags = ("-r " if args["remove"] else "") + ("-f " if args["force"] else "")
                yield Change(command=f"userdel {flags}-- {q}", failure=f"cannot delete user {name}")
            return result
        opts: list[str] = []
        wanted_groups = _csv(args["groups"]) if args.get("groups") is not None else None
        if args.get("uid") is not None and (current is None or current["uid"] != args["uid"]):
            opts += ["-u", str(args["uid"])] + (["-o"] if args["non_unique"] else [])
        if args.get("group") and (current is None or args["group"] not in (current["group"], str(current["gid"]))):
            opts += ["-g", args["group"]]
        if args.get("shell") is not None and (current is None or current["shell"] != args["shell"]):
            opts += ["-s", args["shell"]]
        if args.get("comment") is not None and (current is None or current["comment"] != args["comment"]):
            opts += ["-c", args["comment"]]
        if args.get("home") and (current is None or current["home"] != args["home"]):
            opts += ["-d", args["home"]] + (["-m"] if current is not None and args["move_home"] else [])
        if wanted_groups is not None:
            have = set(current["groups"]) if current else set()
            if args["append"] and not set(wanted_groups) <= have:
                opts += (["-a"] if current else []) + ["-G", ",".join(g for g in wanted_groups if current is None or g not in have)]
            elif not args["append"] and set(wanted_groups) != have:
                opts += ["-G", ",".join(wanted_groups)]
        if args.get("password") is not None:
            shadow = ctx.run(f"getent shadow -- {q} | cut -d: -f2") if current else None
            if current is None or shadow is None or shadow.stdout.strip() != args["password"]:
                opts += ["-p", args["password"]]
        if current is None:
            opts += (["-r"] if args["system"] else []) + (["-m"] if args["create_home"] else ["-M"])
            done = yield Change(command="useradd " + " ".join(shlex.quote(o) for o in opts) + f" -- {q}",
                                failure=f"cannot create user {name}")
        elif opts:
            done = yield Change(command="usermod " + " ".join(shlex.quote(o) for o in opts) + f" -- {q}",
                                failure=f"cannot change user {name}")
        else:
            done = None
        if done is not None and not done.ok:
            return result
        after = read_user(ctx, name) if done is not None and done.ran else current
        data: dict[str, Any] = {"name": name, "state": "present"}
        if current is None:
            data["system"] = args["system"]
        if after:
            data.update(uid=after["uid"], group=after["gid"], comment=after["comment"], home=after["home"],
                        shell=after["shell"])
        if wanted_groups is not None:
            data["groups"] = ",".join(wanted_groups)  # as Ansible: the groups asked for
        if current is None:
            data["create_home"] = args["create_home"]
        else:
            data.update(append=args["append"], move_home=args["move_home"])
        result.data = data
        return result


MODULE = UserModule
