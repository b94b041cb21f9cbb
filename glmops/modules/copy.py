"""copy: put a controller file, or given content, on the host."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._files import ATTR_ARGS, install_content
from glmops.modules._remote import probe
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

CONTENT_ARGS = {
    "dest": Arg("path", required=True, help="Where to put the file on the host (a directory path ending in / copies into it)."),
    "backup": Arg("bool", default=False, help="Keep a timestamped copy of the old file when it changes."),
    "force": Arg("bool", default=True, help="Replace the file when its content differs; false: only create it if missing."),
    "validate": Arg("str", help="A command run on the new file (%s = its path) before it replaces the old one."),
    **ATTR_ARGS,
}


class CopyModule(Module):
    name = "copy"
    doc = (
        "Copy a controller file (`src`, looked up in the role's files/ and the playbook's directory) "
        "or a string (`content`) to the host. Compares checksums first and sends nothing when the "
        "file is already right; writes atomically (temporary file + rename)."
    )
    args = {
        "src": Arg("path", help="A file on the controller."),
        "content": Arg("str", no_log=False, help="The file's content, instead of src."),
        **CONTENT_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if (args.get("src") is None) == (args.get("content") is None):
            raise ArgumentError("give exactly one of 'src' and 'content'", field="src")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        if args.get("content") is not None:
            data = str(args["content"]).encode()
            name = None
        else:
            source = ctx.find_file("files", args["src"])
            if os.path.isdir(source):
                return ModuleResult(failed=True, msg=f"src {args['src']} is a directory; copying directories is not supported (use a loop or archive)")
            with open(source, "rb") as handle:
                data = handle.read()
            name = os.path.basename(source)
        dest = args["dest"]
        if dest.endswith("/") or (name and probe(ctx, dest)[0].type == "directory"):
            if not name:
                return ModuleResult(failed=True, msg="dest is a directory; with content, give a file path")
            dest = posixpath.join(dest, name)
        return install_content(ctx, dest, data, args, what="copy")


MODULE = CopyModule
