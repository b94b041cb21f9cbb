"""template: render a Jinja2 template on the controller and put the result on the host."""

from __future__ import annotations

from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._files import install_content
from glmops.modules.base import Arg, Module, ModuleContext, Plan
from glmops.modules.copy import CONTENT_ARGS


class TemplateModule(Module):
    name = "template"
    doc = (
        "Render a Jinja2 template (`src`, looked up in the role's templates/ and the playbook's "
        "directory) with the host's variables, on the controller, then install it like `copy`: "
        "checksum compare, atomic write, diff with --diff."
    )
    args = {
        "src": Arg("path", required=True, help="The template file on the controller."),
        "trim_blocks": Arg("bool", default=True, help="Remove the newline after a block tag ({% ... %}), as Ansible."),
        "lstrip_blocks": Arg("bool", default=False, help="Strip blanks before a block tag at the start of a line."),
        "newline_sequence": Arg("str", default="\n", help="How lines end in the result: \\n (default), \\r\\n or \\r."),
        **CONTENT_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if args.get("newline_sequence") not in ("\n", "\r", "\r\n"):
            raise ArgumentError(f"newline_sequence must be \\n, \\r\\n or \\r, got {args.get('newline_sequence')!r}",
                                field="newline_sequence")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        source = ctx.find_file("templates", args["src"])
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
        assert ctx.templar is not None
        variables = {**ctx.variables, "template_path": source, "template_host": ctx.host}
        rendered = ctx.templar.render_text(text, variables, name=source, trim_blocks=args["trim_blocks"],
                                           lstrip_blocks=args["lstrip_blocks"], newline_sequence=args["newline_sequence"])
        return install_content(ctx, args["dest"], rendered.encode(), args, what="template")  # a Plan: the driver runs it


MODULE = TemplateModule
