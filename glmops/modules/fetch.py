"""fetch: copy a file from the host to the controller."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from glmops.modules._remote import probe
from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan


class FetchModule(Module):
    name = "fetch"
    doc = (
        "Copy a file from the host to the controller: into DEST/HOSTNAME/SRC, or to DEST itself with "
        "`flat: true`. Nothing is transferred when the local copy already has the same checksum."
    )
    args = {
        "src": Arg("path", required=True, help="The file on the host."),
        "dest": Arg("path", required=True, help="A directory on the controller (or a file path with flat)."),
        "flat": Arg("bool", default=False, help="Put the file at dest itself instead of dest/HOSTNAME/src."),
        "fail_on_missing": Arg("bool", default=True, help="Fail when src does not exist."),
    }

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        src = args["src"]
        state, _ = probe(ctx, src, checksum=True)
        if state.type != "file":
            message = f"the remote file does not exist: {src}" if not state.exists else f"{src} is a {state.type}, not a file"
            return ModuleResult(failed=args["fail_on_missing"], skipped=not args["fail_on_missing"], msg=message)
        if args["flat"]:
            dest = os.path.join(args["dest"], os.path.basename(src)) if args["dest"].endswith("/") else args["dest"]
        else:
            root = os.path.abspath(args["dest"])
            host_dir = os.path.normpath(os.path.join(root, ctx.host))
            dest = os.path.normpath(os.path.join(host_dir, src.lstrip("/")))
            if os.path.dirname(host_dir) != root or os.path.commonpath([host_dir, dest]) != host_dir or dest == host_dir:
                return ModuleResult(failed=True, msg=f"detected directory traversal: {src} of host {ctx.host} would be written to "
                                                     f"{dest}, outside {root}/{ctx.host}; use flat: true with an explicit dest")
        data = {"src": src, "dest": dest, "checksum": state.sha256}
        if os.path.isfile(dest):
            with open(dest, "rb") as handle:
                if hashlib.sha256(handle.read()).hexdigest() == state.sha256:
                    return ModuleResult(data=data)
        yield Change(call=lambda ctx: _get(ctx, src, dest), reason=f"fetch {src} to {dest}")
        return ModuleResult(data=data)


def _get(ctx: ModuleContext, src: str, dest: str) -> None:
    """Copy the host's `src` to the controller's `dest` (its folder made first)."""
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    ctx.conn.get_file(src, dest, become=ctx.become)


MODULE = FetchModule
