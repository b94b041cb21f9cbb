"""lineinfile: make sure a line is in a file (or not), replacing the line a regexp finds."""

from __future__ import annotations

import re
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._files import ATTR_ARGS, install_content
from glmops.modules._remote import probe
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult, Plan


class LineinfileModule(Module):
    name = "lineinfile"
    doc = (
        "Make sure one line is present in a text file (replacing the last line that `regexp` or "
        "`search_string` matches) or absent. The file is read once, changed on the controller, and "
        "written back atomically only when it changes."
    )
    args = {
        "path": Arg("path", required=True, aliases=("dest", "destfile", "name"), help="The file on the host."),
        "line": Arg("str", aliases=("value",), help="The line that should be there (state=present)."),
        "regexp": Arg("str", aliases=("regex",), help="A Python regular expression: the last matching line is replaced (or removed)."),
        "search_string": Arg("str", help="A literal string: the last line containing it is replaced (or removed)."),
        "state": Arg("str", default="present", choices=("present", "absent"), help="Whether the line should be there."),
        "insertafter": Arg("str", help="Where to add a new line: 'EOF' (default) or a regexp; it goes after the last match."),
        "insertbefore": Arg("str", help="Where to add a new line: 'BOF' or a regexp; it goes before the last match."),
        "create": Arg("bool", default=False, help="Create the file when it does not exist."),
        "backup": Arg("bool", default=False, help="Keep a timestamped copy of the old file."),
        "firstmatch": Arg("bool", default=False, help="Use the first match of insertafter/insertbefore instead of the last."),
        **ATTR_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if args["state"] == "present" and args.get("line") is None:
            raise ArgumentError("state=present needs 'line'", field="line")
        if args["state"] == "absent" and not (args.get("regexp") or args.get("search_string") or args.get("line") is not None):
            raise ArgumentError("state=absent needs 'regexp', 'search_string' or 'line'", field="regexp")
        if args.get("insertafter") and args.get("insertbefore"):
            raise ArgumentError("give only one of 'insertafter' and 'insertbefore'", field="insertafter")
        for key in ("regexp", "insertafter", "insertbefore"):
            if args.get(key) and args[key] not in ("EOF", "BOF"):
                try:
                    re.compile(args[key])
                except re.error as exc:
                    raise ArgumentError(f"invalid regular expression: {exc}", field=key) from None

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        path = args["path"]
        state, content = probe(ctx, path, content=True)
        if not state.exists:
            if args["state"] == "absent":
                return ModuleResult(data={"path": path}, msg="file does not exist")
            if not args["create"]:
                return ModuleResult(failed=True, msg=f"{path} does not exist; set create: true to create it")
            content = b""
        elif state.type != "file":
            return ModuleResult(failed=True, msg=f"{path} is a {state.type}, not a file")
        elif content is None:
            return ModuleResult(failed=True, msg=f"{path} is too large for lineinfile")
        text = content.decode(errors="surrogateescape")
        new, message = (self._present if args["state"] == "present" else self._absent)(text.splitlines(keepends=True), args)
        new_text = "".join(new)
        if new_text == text and state.exists:
            result = yield from install_content(ctx, path, content, args, what="lineinfile")  # attributes only
            result.data.setdefault("msg", "")
            return result
        result = yield from install_content(ctx, path, new_text.encode(errors="surrogateescape"), {**args, "force": True}, what="lineinfile")
        if message and not result.failed:
            result.msg = message
        return result

    @staticmethod
    def _matches(lines: list[str], args: dict[str, Any]) -> list[int]:
        if args.get("regexp"):
            pattern = re.compile(args["regexp"])
            return [i for i, l in enumerate(lines) if pattern.search(l.rstrip("\r\n"))]
        if args.get("search_string"):
            return [i for i, l in enumerate(lines) if args["search_string"] in l]
        return [i for i, l in enumerate(lines) if l.rstrip("\r\n") == args.get("line")]

    def _present(self, lines: list[str], args: dict[str, Any]) -> tuple[list[str], str]:
        line = args["line"] + "\n"
        matches = self._matches(lines, args)
        if matches:
            index = matches[-1]
            if lines[index].rstrip("\r\n") == args["line"]:
                return lines, ""
            lines = lines[:index] + [line] + lines[index + 1 :]
            return lines, "line replaced"
        if any(l.rstrip("\r\n") == args["line"] for l in lines):
            return lines, ""
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        after, before = args.get("insertafter"), args.get("insertbefore")
        if before == "BOF":
            return [line] + lines, "line added"
        anchor = before or (after if after != "EOF" else None)
        if anchor:
            pattern = re.compile(anchor)
            found = [i for i, l in enumerate(lines) if pattern.search(l)]
            if found:
                index = found[0] if args.get("firstmatch") else found[-1]
                position = index if before else index + 1
                return lines[:position] + [line] + lines[position:], "line added"
        return lines + [line], "line added"

    def _absent(self, lines: list[str], args: dict[str, Any]) -> tuple[list[str], str]:
        matches = set(self._matches(lines, args))
        if not matches:
            return lines, ""
        return [l for i, l in enumerate(lines) if i not in matches], f"{len(matches)} line(s) removed"


MODULE = LineinfileModule
