"""copy: put a controller file, or given content, on the host."""

from __future__ import annotations

import os
import posixpath
import secrets
import shlex
from collections.abc import Generator
from dataclasses import replace
from typing import Any

from glmops.connection.base import private_create
from glmops.errors import ArgumentError
from glmops.modules._files import ATTR_ARGS, install_content, set_attrs, wanted_attrs
from glmops.modules._remote import normalize_mode, probe
from glmops.modules.base import Arg, Change, Done, Module, ModuleContext, ModuleResult, Plan

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
        "file is already right; writes atomically (a new temporary file, readable by its owner only "
        "until it gets its final mode, renamed into place). A `dest` that is a symlink is replaced by "
        "a regular file (Ansible's copy without `follow`) that keeps the mode and owner of the file "
        "the link pointed to, never the link's own 0777."
    )
    args = {
        "src": Arg("path", help="A file or directory on the controller (on the host with remote_src). A directory "
                   "is copied with its name into dest; with a trailing '/', only its content is."),
        "content": Arg("str", no_log=False, help="The file's content, instead of src."),
        "remote_src": Arg("bool", default=False, help="src is a file or directory on the host: copy it there."),
        **CONTENT_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if (args.get("src") is None) == (args.get("content") is None):
            raise ArgumentError("give exactly one of 'src' and 'content'", field="src")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        if args["remote_src"] and args.get("src") is not None:
            return (yield from copy_on_host(ctx, args))
        if args.get("content") is not None:
            data = str(args["content"]).encode()
            name = None
        else:
            source = ctx.find_file("files", args["src"])
            if os.path.isdir(source):
                return (yield from copy_tree(ctx, source, args))
            with open(source, "rb") as handle:
                data = handle.read()
            name = os.path.basename(source)
        dest = args["dest"]
        if dest.endswith("/") or (name and probe(ctx, dest)[0].type == "directory"):
            if not name:
                return ModuleResult(failed=True, msg="dest is a directory; with content, give a file path")
            dest = posixpath.join(dest, name)
        return (yield from install_content(ctx, dest, data, args, what="copy"))


def copy_tree(ctx: ModuleContext, source: str, args: dict[str, Any]) -> Plan:
    """A controller directory: `src/` puts its content into dest, `src` the directory itself (as Ansible)."""
    dest = args["dest"].rstrip("/") or "/"
    root = dest if args["src"].endswith("/") else posixpath.join(dest, os.path.basename(source.rstrip("/")))
    dirs, files = [], []
    for here, subdirs, names in os.walk(source):
        subdirs.sort()
        rel = os.path.relpath(here, source)
        remote = root if rel == "." else posixpath.join(root, *rel.split(os.sep))
        dirs.append(remote)
        files += [(os.path.join(here, name), posixpath.join(remote, name)) for name in sorted(names)]
    result = ModuleResult(data={"dest": dest + "/", "src": source.rstrip("/") + ("/" if args["src"].endswith("/") else "")})
    listing = ctx.run("for d in " + " ".join(shlex.quote(d) for d in dirs) + '; do [ -d "$d" ] || echo "$d"; done')
    missing = [line for line in listing.stdout.splitlines() if line]
    if missing:
        done = yield Change(command="mkdir -p -- " + " ".join(shlex.quote(d) for d in missing),
                            failure=f"cannot create directories under {dest}")
        if not done.ok:
            return result
    file_args = {**args, "validate": None}
    for local, remote in files:
        with open(local, "rb") as handle:
            content = handle.read()
        one = yield from _prefixed(install_content(ctx, remote, content, file_args, what="copy"), f"{remote}: ")
        if one is not None and one.failed:  # the driver has the message of a failed change (prefixed)
            result.failed, result.msg = True, f"{remote}: {one.msg}"
            return result
    return result


def _prefixed(plan: Plan, prefix: str) -> Generator[Change, Done, ModuleResult | None]:
    """`plan` with each change's failure message prefixed (the file of a tree that failed)."""
    if isinstance(plan, ModuleResult):
        return plan
    try:
        change = next(plan)
        while True:
            change = plan.send((yield replace(change, failure=prefix + change.failure) if change.failure else change))
    except StopIteration as stop:
        return stop.value


def copy_on_host(ctx: ModuleContext, args: dict[str, Any]) -> Plan:
    """remote_src: copy a file or directory that is already on the host (compared first, changed only if it differs)."""
    src, dest = args["src"], args["dest"]
    state, _ = probe(ctx, src, checksum=True)
    if state.type == "directory":
        root = dest.rstrip("/") if src.endswith("/") else posixpath.join(dest, posixpath.basename(src.rstrip("/")))
        result = ModuleResult(data={"src": src, "dest": dest, "state": "directory", "checksum": None, "md5sum": None})
        same = ctx.run(f"diff -r -q -- {shlex.quote(src)} {shlex.quote(root)} >/dev/null 2>&1")
        if same.rc != 0:
            yield Change(command=f"mkdir -p -- {shlex.quote(root)} && cp -R -- {shlex.quote(src.rstrip('/') + '/.')} {shlex.quote(root + '/')}",
                         failure=f"cannot copy {src} to {root}")
        return result
    if state.type != "file":
        return ModuleResult(failed=True, msg=f"Source {src} not found" if not state.exists else f"Source {src} is not a regular file")
    if dest.endswith("/") or probe(ctx, dest)[0].type == "directory":
        dest = posixpath.join(dest, posixpath.basename(src))
    before, _ = probe(ctx, dest, checksum=True)
    if before.type == "directory":
        return ModuleResult(failed=True, msg=f"dest {dest} is a directory")
    result = ModuleResult(data={"src": src, "dest": dest})
    after = before
    if not before.exists or (before.sha256 != state.sha256 and args["force"]):
        done = yield Change(command=_copy_script(src, dest, args.get("mode")), failure=f"cannot copy {src} to {dest}")
        if not done.ok:
            return result
        if not done.ran:  # check mode: the copy is only planned, so are its attributes
            if before.exists:
                yield from set_attrs(dest, before, wanted_attrs(ctx, dest, before, args))
            return result
        after, _ = probe(ctx, dest)
    if after.exists:
        if not (yield from set_attrs(dest, after, wanted_attrs(ctx, dest, after, args))):
            return result
    sums = ctx.run(f"sha1sum -- {shlex.quote(dest)} 2>/dev/null || shasum -a 1 -- {shlex.quote(dest)}; "
                   f"md5sum -- {shlex.quote(dest)} 2>/dev/null || md5 -r -- {shlex.quote(dest)}").stdout.split()
    final, _ = probe(ctx, dest)
    result.data.update(checksum=sums[0] if sums else None, md5sum=sums[2] if len(sums) > 2 else None, state="file",
                       mode=final.mode, uid=final.uid, gid=final.gid, owner=final.owner, group=final.group, size=final.size)
    return result


def _copy_script(src: str, dest: str, mode: object) -> str:
    """sh that copies the host file `src` to `dest` through a new, private temporary file beside it
    (never through anything planted there) that gets its final mode before the rename: a numeric
    `mode`, else the source's mode less the umask (what `cp` gives a new file)."""
    directory, name = posixpath.split(dest)
    tmp = posixpath.join(directory, f".{name}.glmops-tmp-{secrets.token_hex(4)}")
    s, t, q = shlex.quote(src), shlex.quote(tmp), shlex.quote(dest)
    wanted = normalize_mode(mode)
    if wanted and wanted.isdigit():
        perms = f"chmod {wanted} {t}"
    else:
        perms = f'chmod "$(printf %o $(( 0$(stat -L -c %a -- {s} 2>/dev/null || stat -L -f %Lp {s}) & ~0$(umask) )))" {t}'
    return (f"mkdir -p -- {shlex.quote(directory or '.')} && {private_create(f'cat -- {s} > {t}')} && {perms} "
            f"&& mv -f -- {t} {q} || {{ rc=$?; rm -f -- {t}; exit $rc; }}")


MODULE = CopyModule
