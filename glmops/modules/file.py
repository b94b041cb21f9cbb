"""file: make sure a path is a file, directory or link, or absent, with owner/group/mode."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._files import ATTR_ARGS, apply_attrs_script, set_attrs, wanted_attrs
from glmops.modules._remote import probe
from glmops.modules.base import Arg, Change, Diff, Module, ModuleContext, ModuleResult, Plan


class FileModule(Module):
    name = "file"
    doc = (
        "Make a path a directory, an existing file, a symbolic link, or absent, and set its owner, "
        "group and mode. `state: touch` creates the file or updates its times (always changed). "
        "Without `state`, only attributes of an existing path change."
    )
    args = {
        "path": Arg("path", required=True, aliases=("dest", "name"), help="The path on the host."),
        "state": Arg("str", choices=("file", "directory", "absent", "touch", "link", "hard"),
                     help="What the path should be; default: keep what it is (file)."),
        "src": Arg("path", help="Target of the link, for state=link or hard."),
        "recurse": Arg("bool", default=False, help="With state=directory: apply owner/group/mode to everything inside."),
        "force": Arg("bool", default=False, help="With state=link: replace an existing file or link that points elsewhere."),
        "follow": Arg("bool", default=True, help="Kept for Ansible compatibility."),
        **ATTR_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if args.get("state") in ("link", "hard") and not args.get("src"):
            raise ArgumentError("state=link needs 'src' (the link's target)", field="src")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        path = args["path"]
        q = shlex.quote(path)
        state, _ = probe(ctx, path)
        wanted_state = args.get("state") or ("directory" if state.type == "directory" else "file")
        data = {"path": path, "state": wanted_state}
        before = state.type

        if wanted_state == "absent":
            if not state.exists:
                return ModuleResult(data={**data, "state": "absent"})
            return (yield from self._act(f"rm -rf -- {q}", data, before, "absent"))

        if wanted_state == "file":
            if not state.exists:
                return ModuleResult(failed=True, msg=f"file {path} does not exist", data=data,)
            if state.type == "directory" and args.get("state") == "file":
                return ModuleResult(failed=True, msg=f"{path} is a directory, not a file", data=data)
            return (yield from self._attrs(ctx, path, state, args, data))

        if wanted_state == "directory":
            if state.exists and state.type != "directory":
                return ModuleResult(failed=True, msg=f"{path} exists and is a {state.type}, not a directory", data=data)
            if not state.exists:
                done = yield self._act_change(f"mkdir -p -- {q}", data, before, "directory")
                if not done.ok or not done.ran:  # failed, or check mode: nothing to read back
                    return ModuleResult(data=data)
                after, _ = probe(ctx, path)
                return (yield from self._attrs(ctx, path, after, args, data, diff=False))
            if args.get("recurse") and (args.get("mode") or args.get("owner") or args.get("group")):
                return (yield from self._recurse(ctx, path, args, data))
            return (yield from self._attrs(ctx, path, state, args, data))

        if wanted_state == "touch":
            done = yield self._act_change(f"touch -- {q}", data, before, "file")
            if not done.ok or not done.ran:  # failed, or check mode: nothing to read back
                return ModuleResult(data=data)
            after, _ = probe(ctx, path)
            return (yield from self._attrs(ctx, path, after, args, data))

        # link / hard
        src = args["src"]
        if wanted_state == "link":
            if state.type == "link" and state.target == src:
                return (yield from self._attrs(ctx, path, state, {k: v for k, v in args.items() if k in ("owner", "group")}, data))
            if state.exists and state.type != "link" and not args.get("force"):
                return ModuleResult(failed=True, msg=f"{path} exists and is a {state.type}; set force: true to replace it", data=data)
            if state.type == "link" and not args.get("force"):
                pass  # a link that points elsewhere is re-pointed, as Ansible does
            if state.type == "directory":
                return ModuleResult(failed=True, msg=f"{path} is a directory; refusing to replace it with a link", data=data)
            return (yield from self._act(f"ln -sfn -- {shlex.quote(src)} {q}", data, before, f"link -> {src}"))
        same = ctx.run(f"[ {q} -ef {shlex.quote(src)} ]")
        if same.rc == 0:
            return ModuleResult(data=data)
        return (yield from self._act(f"ln -f -- {shlex.quote(src)} {q}", data, before, f"hard link to {src}"))

    @staticmethod
    def _act_change(script: str, data: dict[str, Any], before: str, after: str) -> Change:
        """The change of a path's type (create, remove, link), with its state diff."""
        return Change(command=script, diff=Diff(before=f"state: {before}\n", after=f"state: {after}\n",
                                                before_header=f"{data['path']} (before)", after_header=f"{data['path']} (after)"))

    def _act(self, script: str, data: dict[str, Any], before: str, after: str) -> Plan:
        yield self._act_change(script, data, before, after)
        return ModuleResult(data=data)

    @staticmethod
    def _attrs(ctx: ModuleContext, path: str, state: Any, args: dict[str, Any], data: dict[str, Any], *, diff: bool = True) -> Plan:
        wanted = wanted_attrs(ctx, path, state, args)
        if not wanted:
            return ModuleResult(data={**data, "mode": state.mode, "owner": state.owner, "group": state.group})
        yield from set_attrs(path, state, wanted, diff=diff)
        return ModuleResult(data={**data, **wanted})

    @staticmethod
    def _recurse(ctx: ModuleContext, path: str, args: dict[str, Any], data: dict[str, Any]) -> Plan:
        """Recursive attributes: find what differs with one `find`, change only that."""
        q = shlex.quote(path)
        tests = []
        if args.get("owner"):
            tests.append(f"! -user {shlex.quote(str(args['owner']))}")
        if args.get("group"):
            tests.append(f"! -group {shlex.quote(str(args['group']))}")
        from glmops.modules._remote import normalize_mode

        mode = normalize_mode(args.get("mode"))
        if mode and mode.isdigit():
            tests.append(f"! -perm {mode}")
        expression = " -o ".join(f"\\( {t} \\)" for t in tests) if tests else "-false"
        differing = ctx.run(f"find {q} {expression} -print | head -n 1")
        if not differing.stdout.strip():
            return ModuleResult(data=data)
        wanted = {k: normalize_mode(v) if k == "mode" else str(v) for k, v in args.items() if k in ("mode", "owner", "group") and v}
        yield Change(command=apply_attrs_script(path, wanted, recurse=True))
        return ModuleResult(data=data)


MODULE = FileModule
