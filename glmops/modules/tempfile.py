"""tempfile: create a temporary file or directory on the host and return its path."""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._remote import probe
from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan


class TempfileModule(Module):
    name = "tempfile"
    doc = (
        "Create a new temporary file (mode 0600) or directory (0700) with `mktemp` under `path` ($TMPDIR or "
        "/tmp by default), named `prefix` + 8 random characters + `suffix`. Always changed; skipped in check "
        "mode (as Ansible). Returns path, state, mode, owner, group, uid, gid, size."
    )
    args = {
        "state": Arg("str", default="file", choices=("file", "directory"), help="Make a file or a directory."),
        "path": Arg("path", help="The directory to create it in."),
        "prefix": Arg("str", default="ansible.", help="The start of the name."),
        "suffix": Arg("str", default="", help="The end of the name."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        for field in ("prefix", "suffix"):
            if "/" in (args.get(field) or ""):
                raise ArgumentError(f"'{field}' must not contain '/'", field=field, hint="use 'path' for the directory")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        directory = shlex.quote(args["path"]) if args.get("path") else '"${TMPDIR:-/tmp}"'
        template = f"{directory}/{shlex.quote(args['prefix'] + 'XXXXXXXX')}"
        flag = "-d " if args["state"] == "directory" else ""
        suffix = args["suffix"]
        if suffix:  # GNU mktemp takes --suffix; elsewhere the X's must end the name: rename after creating
            cmd = (f"mktemp {flag}--suffix={shlex.quote(suffix)} {template} 2>/dev/null || "
                   f"{{ t=$(mktemp {flag}{template}) && mv -- \"$t\" \"$t\"{shlex.quote(suffix)} && echo \"$t\"{shlex.quote(suffix)}; }}")
        else:
            cmd = f"mktemp {flag}{template}"
        done = yield Change(command=cmd, may_fail=True, 
                            check_result=ModuleResult(skipped=True, msg="tempfile does not run in check mode"))
        path = done.stdout.strip()
        if done.rc != 0 or not path:
            return ModuleResult(failed=True, msg=f"cannot create a temporary {args['state']}: {done.stderr.strip()}")
        state, _ = probe(ctx, path)
        return ModuleResult(data={
            "path": posixpath.normpath(path), "state": args["state"], "mode": state.mode, "owner": state.owner,
            "group": state.group, "uid": state.uid, "gid": state.gid, "size": state.size})


MODULE = TempfileModule
