"""git: clone a repository or update it to a version, with git-lfs files fetched and checked."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.modules.base import Arg, Change, Diff, Done, Module, ModuleContext, ModuleResult, Plan

LFS_POINTER_SCAN = (
    # Files git-lfs left as pointers (about 130 bytes, starting with the spec line).
    "git lfs ls-files -n 2>/dev/null | while IFS= read -r f; do "
    '[ -f "$f" ] && [ "$(wc -c < "$f")" -lt 1024 ] && head -c 40 "$f" | grep -q "^version https://git-lfs" && echo "$f"; done'
)


class GitModule(Module):
    name = "git"
    doc = (
        "Clone `repo` into `dest`, or bring an existing clone to `version` (branch, tag or commit). "
        "Reports changed only when a clone happened or HEAD moved (before/after in the result). "
        "A checkout with local changes is refused unless `force`. With `lfs: true`, files tracked by "
        "git-lfs are fetched with `git lfs pull` after a clone made with GIT_LFS_SKIP_SMUDGE=1 (the "
        "fix the hand-written guides apply for smudge errors), transfers resume, and the task fails "
        "if any file is still an LFS pointer."
    )
    args = {
        "repo": Arg("str", required=True, word=True, aliases=("name",), help="Repository URL or path."),
        "dest": Arg("path", required=True, help="Directory of the clone."),
        "version": Arg("str", default="HEAD", word=True, help="Branch, tag or commit to check out."),
        "update": Arg("bool", default=True, help="Fetch and move an existing clone to version."),
        "force": Arg("bool", default=False, help="Discard local changes in the checkout."),
        "depth": Arg("int", help="Shallow clone with this many commits."),
        "remote": Arg("str", default="origin", word=True, help="Name of the remote."),
        "recursive": Arg("bool", default=True, help="Update submodules too."),
        "accept_hostkey": Arg("bool", default=False, help="Accept an unknown SSH host key of the git server."),
        "lfs": Arg("bool", default=False, help="Fetch git-lfs files and check that none is left as a pointer."),
        "lfs_include": Arg("str", word=True, help="Only these LFS paths (git lfs pull --include)."),
        "lfs_exclude": Arg("str", word=True, help="Not these LFS paths (git lfs pull --exclude)."),
    }

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        dest, repo, version = args["dest"], args["repo"], args["version"]
        d = shlex.quote(dest)
        env = "GIT_TERMINAL_PROMPT=0 "
        if args["accept_hostkey"]:
            env += "GIT_SSH_COMMAND='ssh -o StrictHostKeyChecking=accept-new' "
        state = ctx.run(f"cd {d} 2>/dev/null && git rev-parse HEAD 2>/dev/null && git status --porcelain --untracked-files=no | head -n 5")
        lines = state.stdout.splitlines()
        before = lines[0] if state.rc == 0 and lines else None
        dirty = lines[1:] if before else []
        data: dict[str, Any] = {"before": before, "after": before}
        if before is None:
            exists = ctx.run(f"[ -e {d} ] && [ -n \"$(ls -A {d} 2>/dev/null)\" ]").rc == 0
            if exists:
                return ModuleResult(failed=True, msg=f"{dest} exists, is not empty, and is not a git checkout", data=data)
            remote_head = self._remote_commit(ctx, env, repo, version)
            data["after"] = remote_head
            return (yield from self._clone(ctx, env, args, data))
        if dirty and not args["force"]:
            return ModuleResult(failed=True, msg=f"{dest} has local modifications ({', '.join(dirty)}); set force: true to discard them", data=data)
        if not args["update"]:
            return (yield from self._lfs(ctx, args, ModuleResult(data=data), False)) if args["lfs"] else ModuleResult(data=data)
        target = self._remote_commit(ctx, env, repo, version, dest=dest)
        data["after"] = target or before
        if target and target == before and not dirty:
            return (yield from self._lfs(ctx, args, ModuleResult(data=data), False)) if args["lfs"] else ModuleResult(data=data)
        updated = yield Change(call=lambda ctx: self._update(ctx, env, args, before, bool(dirty)), may_fail=True,
                               diff=Diff(f"{before}\n", f"{data['after']}\n", dest, dest), reason=f"update {dest} to {version}")
        if not updated.ran:  # check mode
            return ModuleResult(data=data)
        if not updated.ok:
            return ModuleResult(failed=True, msg=f"updating {dest} failed: {updated.stdout.strip()[-2000:]}", data=data)
        data["after"] = updated.value
        result = ModuleResult(data=data)
        return (yield from self._lfs(ctx, args, result, updated.changed)) if args["lfs"] else result

    def _update(self, ctx: ModuleContext, env: str, args: dict[str, Any], before: str, dirty: bool) -> Done:
        """Fetch and check out `version` in the clone; changed when HEAD moved or local changes were discarded."""
        d, remote = shlex.quote(args["dest"]), shlex.quote(args["remote"])
        fetch = ctx.run(f"cd {d} && {env}GIT_LFS_SKIP_SMUDGE=1 git fetch --tags --force {remote} 2>&1 && "
                        f"{env}GIT_LFS_SKIP_SMUDGE=1 git checkout --force "
                        f"{shlex.quote(self._ref(ctx, args['dest'], args['version'], args['remote']))} 2>&1 "
                        f"&& git reset --hard -q 2>&1", timeout=3600)
        if fetch.rc != 0:
            return Done(ran=True, rc=fetch.rc, stdout=fetch.stdout, stderr=fetch.stderr)
        if args["recursive"]:
            ctx.run(f"cd {d} && git submodule update --init --recursive 2>&1", timeout=3600)
        after = ctx.run(f"cd {d} && git rev-parse HEAD").stdout.strip()
        return Done(ran=True, value=after, changed=after != before or dirty)

    @staticmethod
    def _ref(ctx: ModuleContext, dest: str, version: str, remote: str) -> str:
        """A branch name checks out the remote branch's tip; tags and commits as they are."""
        if version == "HEAD":
            return f"{remote}/HEAD"
        is_branch = ctx.run(f"cd {shlex.quote(dest)} && git rev-parse --verify -q {shlex.quote(f'refs/remotes/{remote}/{version}')}").rc == 0
        return f"{remote}/{version}" if is_branch else version

    @staticmethod
    def _remote_commit(ctx: ModuleContext, env: str, repo: str, version: str, dest: str | None = None) -> str | None:
        """The commit `version` names upstream (ls-remote), or the version itself when it is a commit."""
        if len(version) >= 7 and all(c in "0123456789abcdef" for c in version.lower()):
            if dest:
                full = ctx.run(f"cd {shlex.quote(dest)} && git rev-parse --verify -q {shlex.quote(version + '^{commit}')}")
                if full.rc == 0:
                    return full.stdout.strip()
            return version
        listing = ctx.run(f"{env}git ls-remote -- {shlex.quote(repo)} {shlex.quote(version)} {shlex.quote(f'refs/tags/{version}^{{}}')}", timeout=120)
        if listing.rc != 0:
            return None
        refs = dict((line.split()[1], line.split()[0]) for line in listing.stdout.splitlines() if len(line.split()) == 2)
        for ref in (f"refs/tags/{version}^{{}}", f"refs/heads/{version}", f"refs/tags/{version}", version):
            if ref in refs:
                return refs[ref]
        return None

    def _clone(self, ctx: ModuleContext, env: str, args: dict[str, Any], data: dict[str, Any]) -> Plan:
        dest, version = args["dest"], args["version"]
        options = [f"--origin {shlex.quote(args['remote'])}"]
        if args.get("depth"):
            options.append(f"--depth {int(args['depth'])}")
            if version != "HEAD":
                options.append(f"--branch {shlex.quote(version)}")
        if args["recursive"]:
            options.append("--recurse-submodules")
        clone = yield Change(command=f"{env}GIT_LFS_SKIP_SMUDGE=1 git clone {' '.join(options)} -- {shlex.quote(args['repo'])} "
                             f"{shlex.quote(dest)} 2>&1", timeout=7200, may_fail=True,
                             diff=Diff("", f"cloned {args['repo']} @ {version}\n", dest, dest), reason=f"clone {args['repo']}")
        if not clone.ran:  # check mode
            return ModuleResult(data=data)
        if clone.rc != 0:
            return ModuleResult(failed=True, msg=f"git clone failed: {clone.stdout.strip()[-2000:]}", data=data)
        if version != "HEAD" and not args.get("depth"):
            checkout = yield Change(command=f"cd {shlex.quote(dest)} && GIT_LFS_SKIP_SMUDGE=1 git checkout -q {shlex.quote(version)} 2>&1",
                                    may_fail=True)
            if checkout.rc != 0:
                return ModuleResult(failed=True, msg=f"git checkout {version} failed: {checkout.stdout.strip()}", data=data)
        data["after"] = ctx.run(f"cd {shlex.quote(dest)} && git rev-parse HEAD").stdout.strip()
        result = ModuleResult(data=data)
        if args["lfs"]:
            return (yield from self._lfs(ctx, args, result, True))
        # Without lfs: true, still check out LFS files as a plain clone would (when git-lfs exists).
        yield Change(command=f"cd {shlex.quote(dest)} && command -v git-lfs >/dev/null && git lfs pull 2>&1; true", timeout=7200,
                     may_fail=True)
        return result

    def _lfs(self, ctx: ModuleContext, args: dict[str, Any], result: ModuleResult, changed: bool) -> Plan:
        """lfs: true: pull LFS files when pointers are left (or the checkout just changed); none may be left."""
        d = shlex.quote(args["dest"])
        pointers = ctx.run(f"cd {d} && {LFS_POINTER_SCAN}")
        if pointers.stdout.strip() or changed:
            select = ""
            if args.get("lfs_include"):
                select += f" --include {shlex.quote(args['lfs_include'])}"
            if args.get("lfs_exclude"):
                select += f" --exclude {shlex.quote(args['lfs_exclude'])}"
            pull = yield Change(command=f"cd {d} && command -v git-lfs >/dev/null || "
                                f"{{ echo 'git-lfs is not installed on the host' >&2; exit 127; }}; "
                                f"git lfs install --local >/dev/null && git lfs pull{select} 2>&1", timeout=7200, may_fail=True,
                                reason="fetch the LFS files")
            if not pull.ran:  # check mode
                return result
            if pull.rc != 0:
                return ModuleResult(failed=True, msg=f"git lfs pull failed: {(pull.stderr or pull.stdout).strip()[-2000:]} "
                                    "(run the task again: LFS downloads resume)", data=result.data)
            left = ctx.run(f"cd {d} && {LFS_POINTER_SCAN}").stdout.split()
            if args.get("lfs_include") or args.get("lfs_exclude"):
                left = []
            if left:
                return ModuleResult(failed=True, msg=f"still LFS pointer files after git lfs pull: {', '.join(left[:5])}", data=result.data)
        result.data["lfs_pointers_left"] = 0
        return result


MODULE = GitModule
