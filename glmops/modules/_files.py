"""What file, copy, template and lineinfile share: owner/group/mode and content installs."""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Generator
from typing import Any

from glmops.modules._remote import PathState, normalize_mode, probe, text_diff
from glmops.modules.base import Arg, Change, Diff, Done, ModuleContext, ModuleResult, Plan

ATTR_ARGS = {
    "mode": Arg("raw", help="Permissions: a quoted octal string like '0644' (or symbolic, u+rw)."),
    "owner": Arg("str", word=True, help="User that should own the file."),
    "group": Arg("str", word=True, help="Group that should own the file."),
}


def attr_changes(state: PathState, args: dict[str, Any]) -> dict[str, str]:
    """The attributes that differ from what `args` asks: {'mode': '0644', 'owner': 'root'}."""
    wanted: dict[str, str] = {}
    mode = normalize_mode(args.get("mode"))
    if mode and (not mode.isdigit() or mode != state.mode):
        wanted["mode"] = mode
    if args.get("owner") and args["owner"] not in (state.owner, str(state.uid)):
        wanted["owner"] = str(args["owner"])
    if args.get("group") and args["group"] not in (state.group, str(state.gid)):
        wanted["group"] = str(args["group"])
    return wanted


def apply_attrs_script(path: str, wanted: dict[str, str], recurse: bool = False) -> str:
    """sh that applies owner/group/mode to a path."""
    r = "-R " if recurse else ""
    q = shlex.quote(path)
    parts = []
    if "owner" in wanted or "group" in wanted:
        spec = wanted.get("owner", "") + (":" + wanted["group"] if "group" in wanted else "")
        parts.append(f"chown {r}-- {shlex.quote(spec)} {q}")
    if "mode" in wanted:
        parts.append(f"chmod {r}-- {shlex.quote(wanted['mode'])} {q}")
    return " && ".join(parts)


def symbolic_mode_changed(ctx: ModuleContext, path: str, before: PathState, wanted: dict[str, str]) -> dict[str, str]:
    """Symbolic modes cannot be compared up front: drop them if chmod would leave the mode as it is."""
    mode = wanted.get("mode")
    if mode and not mode.isdigit():
        result = ctx.run(f"t=$(mktemp) && chmod {before.mode} \"$t\" && chmod -- {shlex.quote(mode)} \"$t\" && "
                         f"(stat -c %a \"$t\" 2>/dev/null || stat -f %Lp \"$t\"); rm -f \"$t\"")
        if result.rc == 0 and result.stdout.strip().zfill(4) == before.mode:
            wanted = {k: v for k, v in wanted.items() if k != "mode"}
    return wanted


def wanted_attrs(ctx: ModuleContext, path: str, state: PathState, args: dict[str, Any]) -> dict[str, str]:
    """The attributes of an existing path that must change (symbolic modes checked on the host)."""
    wanted = attr_changes(state, args)
    return symbolic_mode_changed(ctx, path, state, wanted) if wanted else wanted


def attr_diff(path: str, state: PathState, wanted: dict[str, str]) -> Diff:
    """The --diff entry of an attribute change."""
    return Diff(before=_attr_text(state, wanted), after=_attr_text_after(wanted),
                before_header=f"{path} (attributes)", after_header=f"{path} (attributes)")


def set_attrs(path: str, state: PathState, wanted: dict[str, str], *, diff: bool = True,
              recurse: bool = False) -> Generator[Change, Done, bool]:
    """The owner/group/mode step of file, copy, template, get_url and lineinfile (use with `yield from`).

    Yields the chown/chmod of `wanted` (from `wanted_attrs`) with its diff (unless `diff=False`, when
    the caller yielded it); a failing chown/chmod fails the module. Nothing wanted: nothing is yielded.
    Returns False when it failed (the caller returns then).
    """
    if not wanted:
        return True
    done = yield Change(command=apply_attrs_script(path, wanted, recurse=recurse),
                        diff=attr_diff(path, state, wanted) if diff else None,
                        failure=f"setting {', '.join(wanted)} on {path} failed")
    return done.ok


def install_content(ctx: ModuleContext, dest: str, content: bytes, args: dict[str, Any], *, what: str) -> Plan:
    """copy/template: put `content` at `dest` when it differs (checksum), with backup, validate, attrs, diff."""
    state, before = probe(ctx, dest, checksum=True, content=ctx.diff)
    if state.type == "directory":
        return ModuleResult(failed=True, msg=f"dest {dest} is a directory", data={"dest": dest})
    checksum = hashlib.sha256(content).hexdigest()
    content_changes = not state.exists or (state.sha256 != checksum and args.get("force", True))
    wanted = wanted_attrs(ctx, dest, state, args) if state.exists else {}
    # `checksum` as Ansible reports it: SHA-1 (comparable with stat's default); sha256 compares above
    result = ModuleResult(data={"dest": dest, "checksum": hashlib.sha1(content).hexdigest(), "size": len(content)})
    if not content_changes:
        result.failed = not (yield from set_attrs(dest, state, wanted))
        return result
    if args.get("backup") and state.exists:
        backup = f"{dest}.{int(time.time())}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"
        done = yield Change(command=f"cp -p -- {shlex.quote(dest)} {shlex.quote(backup)}", failure="backup failed",
                            reason=f"keep the old {dest}")
        if not done.ok:
            return ModuleResult(failed=True)
        if done.ran:
            result.data["backup_file"] = backup
    if args.get("validate"):
        checked = yield Change(call=lambda ctx: _validate(ctx, content, args["validate"]), reason="validate the new content")
        if checked.value:
            return ModuleResult(failed=True, msg=checked.value, data=result.data)
    mode = normalize_mode(args.get("mode"))
    diffs = [text_diff(before if state.exists else None, content if len(content) < 256 * 1024 else b"(large file)", dest)
             ] if ctx.diff else []
    if wanted:
        diffs.append(attr_diff(dest, state, wanted))
    written = yield Change(upload=(content, dest), mode=int(mode, 8) if mode and mode.isdigit() else None, diff=diffs,
                           failure=f"writing {dest} failed", reason=f"{what} to {dest}")
    if not written.ok:
        return ModuleResult(failed=True, data=result.data)
    if not written.ran:  # check mode: the attributes are in the diff above
        return result
    after, _ = probe(ctx, dest)
    result.failed = not (yield from set_attrs(dest, after, attr_changes(after, {k: v for k, v in args.items() if k in ("owner", "group", "mode")}),
                         diff=False))
    return result


def _validate(ctx: ModuleContext, content: bytes, command: str) -> str | None:
    """Run the `validate` command (with %s = a temporary copy) on the host; return an error or None."""
    if "%s" not in command:
        return "validate must contain %s (the path of the file to check)"
    tmp = ctx.run("mktemp").stdout.strip()
    try:
        ctx.conn.put_bytes(content, tmp, mode=0o600, become=ctx.become)
        check = ctx.run(command.replace("%s", shlex.quote(tmp)))
        if check.rc != 0:
            return f"failed to validate: {(check.stderr or check.stdout).strip()}"
        return None
    finally:
        ctx.run(f"rm -f {shlex.quote(tmp)}")


def _attr_text(state: PathState, wanted: dict[str, str]) -> str:
    current = {"mode": state.mode, "owner": state.owner, "group": state.group}
    return "".join(f"{k}: {current[k]}\n" for k in wanted)


def _attr_text_after(wanted: dict[str, str]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in wanted.items())
