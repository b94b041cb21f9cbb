"""git: clone a repository or update it to a version, with git-lfs files fetched and checked."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.modules.base import Arg, Diff, Module, ModuleContext, ModuleResult

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

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
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
            if ctx.check:
                return ModuleResult(changed=True, data=data, diff=[Diff("", f"cloned {repo} @ {version}\n", dest, dest)] if ctx.diff else [])
            return self._clone(ctx, env, args, data)
        if dirty and not args["force"]:
            return ModuleResult(failed=True, msg=f"{dest} has local modifications ({', '.join(dirty)}); set force: true to discard them", data=data)
        if not args["update"]:
            return self._lfs(ctx, args, ModuleResult(data=data)) if args["lfs"] else ModuleResult(data=data)
        target = self._remote_commit(ctx, env, repo, version, dest=dest)
        data["after"] = target or before
        if target and target == before and not dirty:
            return self._lfs(ctx, args, ModuleResult(data=data)) if args["lfs"] else ModuleResult(data=data)
        if ctx.check:
            return ModuleResult(changed=True, data=data)
        remote = shlex.quote(args["remote"])
        fetch = ctx.run(f"cd {d} && {env}GIT_LFS_SKIP_SMUDGE=1 git fetch --tags --force {remote} 2>&1 && "
                        f"{env}GIT_LFS_SKIP_SMUDGE=1 git checkout --force {shlex.quote(self._ref(ctx, dest, version, args['remote']))} 2>&1 "
                        f"&& git reset --hard -q 2>&1", timeout=3600)
        if fetch.rc != 0:
            return ModuleResult(failed=True, msg=f"updating {dest} failed: {fetch.stdout.strip()[-2000:]}", data=data)
        if args["recursive"]:
            ctx.run(f"cd {d} && git submodule update --init --recursive 2>&1", timeout=3600)
        data["after"] = ctx.run(f"cd {d} && git rev-parse HEAD").stdout.strip()
        result = ModuleResult(changed=data["after"] != before or bool(dirty), data=data)
        return self._lfs(ctx, args, result) if args["lfs"] else result

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

    def _clone(self, ctx: ModuleContext, env: str, args: dict[str, Any], data: dict[str, Any]) -> ModuleResult:
        dest, version = args["dest"], args["version"]
        options = [f"--origin {shlex.quote(args['remote'])}"]
        if args.get("depth"):
            options.append(f"--depth {int(args['depth'])}")
            if version != "HEAD":
                options.append(f"--branch {shlex.quote(version)}")
        if args["recursive"]:
            options.append("--recurse-submodules")
        clone = ctx.run(f"{env}GIT_LFS_SKIP_SMUDGE=1 git clone {' '.join(options)} -- {shlex.quote(args['repo'])} {shlex.quote(dest)} 2>&1", timeout=7200)
        if clone.rc != 0:
            return ModuleResult(failed=True, msg=f"git clone failed: {clone.stdout.strip()[-2000:]}", data=data)
        if version != "HEAD" and not args.get("depth"):
            checkout = ctx.run(f"cd {shlex.quote(dest)} && GIT_LFS_SKIP_SMUDGE=1 git checkout -q {shlex.quote(version)} 2>&1")
            if checkout.rc != 0:
                return ModuleResult(failed=True, msg=f"git checkout {version} failed: {checkout.stdout.strip()}", data=data)
        data["after"] = ctx.run(f"cd {shlex.quote(dest)} && git rev-parse HEAD").stdout.strip()
        result = ModuleResult(changed=True, data=data)
        return self._lfs(ctx, args, result) if args["lfs"] else self._smudge(ctx, dest, result)

    @staticmethod
    def _smudge(ctx: ModuleContext, dest: str, result: ModuleResult) -> ModuleResult:
        """Without lfs: true, still check out LFS files as a plain clone would (when git-lfs exists)."""
        ctx.run(f"cd {shlex.quote(dest)} && command -v git-lfs >/dev/null && git lfs pull 2>&1; true", timeout=7200)
        return result

    def _lfs(self, ctx: ModuleContext, args: dict[str, Any], result: ModuleResult) -> ModuleResult:
        d = shlex.quote(args["dest"])
        pointers = ctx.run(f"cd {d} && {LFS_POINTER_SCAN}")
        if pointers.stdout.strip() or result.changed:
            if ctx.check:
                result.changed = True
                return result
            select = ""
            if args.get("lfs_include"):
                select += f" --include {shlex.quote(args['lfs_include'])}"
            if args.get("lfs_exclude"):
                select += f" --exclude {shlex.quote(args['lfs_exclude'])}"
            pull = ctx.run(f"cd {d} && command -v git-lfs >/dev/null || {{ echo 'git-lfs is not installed on the host' >&2; exit 127; }}; "
                           f"git lfs install --local >/dev/null && git lfs pull{select} 2>&1", timeout=7200)
            if pull.rc != 0:
                return ModuleResult(failed=True, msg=f"git lfs pull failed: {(pull.stderr or pull.stdout).strip()[-2000:]} "
                                    "(run the task again: LFS downloads resume)", data=result.data)
            result.changed = result.changed or bool(pointers.stdout.strip())
            left = ctx.run(f"cd {d} && {LFS_POINTER_SCAN}").stdout.split()
            if args.get("lfs_include") or args.get("lfs_exclude"):
                left = []
            if left:
                return ModuleResult(failed=True, msg=f"still LFS pointer files after git lfs pull: {', '.join(left[:5])}", data=result.data)
        result.data["lfs_pointers_left"] = 0
        return result


MODULE = GitModule
