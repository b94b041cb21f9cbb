"""stat: read facts about a path (never changes anything)."""

from __future__ import annotations

from typing import Any

from glmops.modules._remote import probe
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class StatModule(Module):
    name = "stat"
    doc = (
        "Read a path's state into `stat`: exists, isdir, isreg, islnk, lnk_target, mode ('0644'), size, "
        "uid, gid, pw_name, gr_name, mtime, and `checksum` (SHA-256, where Ansible uses SHA-1) for files."
    )
    args = {
        "path": Arg("path", required=True, aliases=("dest", "name"), help="The path on the host."),
        "get_checksum": Arg("bool", default=True, help="Compute the SHA-256 of a regular file."),
        "follow": Arg("bool", default=False, help="Kept for Ansible compatibility (links are reported as links)."),
        "checksum_algorithm": Arg("str", default="sha256", choices=("sha256",), help="Only sha256 is supported."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        state, _ = probe(ctx, args["path"], checksum=args["get_checksum"])
        info: dict[str, Any] = {"exists": state.exists}
        if state.exists:
            info.update(
                path=args["path"], isdir=state.type == "directory", isreg=state.type == "file", islnk=state.type == "link",
                mode=state.mode, size=state.size, uid=state.uid, gid=state.gid, pw_name=state.owner, gr_name=state.group,
                mtime=state.mtime,
            )
            if state.type == "link":
                info["lnk_target"] = state.target
            if state.sha256:
                info["checksum"] = state.sha256
        return ModuleResult(data={"stat": info})


MODULE = StatModule
