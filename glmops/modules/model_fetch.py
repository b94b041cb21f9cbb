"""model_fetch: put a model folder on the host from git-lfs, ModelScope, Hugging Face or the controller, verified."""

from __future__ import annotations

import json
import os
import posixpath
import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules import _fetch_worker as worker
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

SOURCES = ("modelscope", "huggingface", "git", "upload")
FETCH_TIMEOUT = 24 * 3600.0


class WorkerError(Exception):
    """The target-side script failed; `msg` names what and the fix, `data` carries details."""

    def __init__(self, msg: str, data: dict[str, Any] | None = None):
        super().__init__(msg)
        self.msg, self.data = msg, data or {}


def state_dir(dest: str) -> str:
    """Where a fetch keeps its log, pid, progress and result on the host: beside dest, never inside it."""
    parent, name = posixpath.split(dest.rstrip("/") or "/")
    return posixpath.join(parent, f".{name}.glmops-fetch")


def worker_program(request: dict[str, Any]) -> bytes:
    """The target-side script followed by the call that runs `request` (data only, never a shell word)."""
    with open(worker.__file__, encoding="utf-8") as handle:
        source = handle.read()
    call = f"\nif __name__ == '__main__':\n    sys.exit(main(json.loads({json.dumps(request)!r})))\n"
    return (source + call).encode()


def parse_result(stdout: str, stderr: str, rc: int) -> dict[str, Any]:
    """The JSON object the worker printed between its markers."""
    parts = stdout.split(worker.MARK)
    if len(parts) < 3:
        tail = (stderr or stdout).strip()[-1500:]
        if "No such file" in tail or "not found" in tail:
            tail += " (is the `python` argument a Python 3 interpreter on the host?)"
        raise WorkerError(f"the fetch script on the host failed (exit {rc}): {tail}")
    return json.loads(parts[-2])


def call_worker(ctx: ModuleContext, python: str, request: dict[str, Any], *, timeout: float | None = 600) -> dict[str, Any]:
    """Run one worker request on the host with `python` (one round trip); return its data or raise WorkerError."""
    result = ctx.run(f"{shlex.quote(python)} -", stdin=worker_program(request), timeout=timeout)
    answer = parse_result(result.stdout, result.stderr, result.rc)
    if not answer.get("ok"):
        raise WorkerError(answer.get("msg", "failed"), answer.get("data"))
    return answer["data"]


def _refuse_option(value: Any, field: str, pos: Any) -> None:
    if isinstance(value, str) and value.startswith("-"):
        raise ArgumentError(f"{field} must not start with '-': {value!r}", pos=pos, field=field,
                            hint="a value starting with '-' would be read as an option by git or the hub client")


class ModelFetchModule(Module):
    name = "model_fetch"
    doc = (
        "Put a model folder at `dest` on the host and verify it. `source`: `git` (clone with "
        "GIT_LFS_SKIP_SMUDGE=1, then `git lfs pull`, the fix for smudge errors), `modelscope` or "
        "`huggingface` (the real client package in the host's `python`, installed there when missing; "
        "`endpoint` for a mirror), or `upload` (the controller folder `src` over SFTP on the run's "
        "connection: complete files are skipped by size and SHA-256, a partial file resumes, each file "
        "lands atomically). Before downloading, a disk preflight fails with the numbers when the "
        "filesystem cannot hold the model. After, every file is checked: LFS pointer files left behind, "
        "truncated files and SHA-256 / LFS oid mismatches fail the task and are named with the fix. A "
        "verified folder gets `DEST/.glmops-manifest.json` (files, sizes, hashes, mtimes): a re-run "
        "checks it in one round trip without hashing again and reports changed=false. Check mode "
        "reports what would be fetched and how many bytes. `drop_git_dir: true` removes .git after "
        "verification (the LFS object store doubles the disk use)."
    )
    args = {
        "source": Arg("str", required=True, choices=SOURCES, help="Where the weights come from."),
        "repo": Arg("str", help="Model id (ZhipuAI/chatglm3-6b) or git URL; not for upload."),
        "revision": Arg("str", help="Branch, tag or commit (hub revision)."),
        "dest": Arg("path", required=True, help="The model folder on the host."),
        "src": Arg("path", help="Controller folder to upload (source: upload)."),
        "include": Arg("list", default=[], elements="str", help="Only files matching these globs (e.g. '*.safetensors')."),
        "exclude": Arg("list", default=[], elements="str", help="Not the files matching these globs."),
        "endpoint": Arg("str", help="Hub endpoint or mirror URL (HF_ENDPOINT / MODELSCOPE_DOMAIN)."),
        "python": Arg("str", default="python3", help="Python on the host that runs the download (and holds the hub client)."),
        "drop_git_dir": Arg("bool", default=False, help="Remove .git after verification (source: git)."),
        "verify": Arg("bool", default=True, help="Hash every file after fetching and compare with the source."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        source = args["source"]
        if source == "upload":
            if not args.get("src"):
                raise ArgumentError("source: upload needs `src` (the controller folder)", field="src")
        elif not args.get("repo"):
            raise ArgumentError(f"source: {source} needs `repo`", field="repo",
                                hint="a model id such as ZhipuAI/chatglm3-6b, or a git URL for source: git")
        for field in ("repo", "revision", "dest", "python", "endpoint"):
            _refuse_option(args.get(field), field, None)
        for field in ("include", "exclude"):
            for pattern in args.get(field) or []:
                _refuse_option(pattern, field, None)
                if "," in pattern and source == "git":
                    raise ArgumentError(f"{field} pattern {pattern!r} holds a comma, which git lfs reads as a separator",
                                        field=field, hint="write one pattern per list item")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        for field in ("repo", "revision", "dest", "python", "endpoint"):
            _refuse_option(args.get(field), field, ctx.pos)
        dest = args["dest"].rstrip("/") or "/"
        args = dict(args, dest=dest)
        try:
            if args["source"] == "upload":
                from glmops.modules._upload import upload

                return upload(ctx, args)
            return self._fetch(ctx, args)
        except WorkerError as exc:
            return ModuleResult(failed=True, msg=exc.msg, data={"dest": dest, **exc.data})

    @staticmethod
    def _spec(args: dict[str, Any]) -> dict[str, Any]:
        return {key: args.get(key) for key in ("source", "repo", "revision", "dest", "include", "exclude", "endpoint",
                                               "drop_git_dir", "verify")}

    @staticmethod
    def verified(probe: dict[str, Any], spec: dict[str, Any]) -> bool:
        """Does the manifest on the host vouch for this exact request, with no file changed since?"""
        manifest = probe.get("manifest")
        if not manifest or probe.get("drift"):
            return False
        return all(manifest.get(key) == (spec.get(key) or ([] if key in ("include", "exclude") else None))
                   for key in ("source", "repo", "revision", "include", "exclude"))

    def _fetch(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        dest, python = args["dest"], args["python"]
        spec = self._spec(args)
        state = state_dir(dest)
        probe = call_worker(ctx, python, {"op": "probe", "dest": dest, "state": state})
        data: dict[str, Any] = {"dest": dest, "source": args["source"], "repo": args["repo"]}
        if self.verified(probe, spec):
            manifest = probe["manifest"]
            data.update(files=len(manifest["files"]), bytes=manifest["total_bytes"], manifest=posixpath.join(dest, worker.MANIFEST))
            return ModuleResult(changed=False, msg=f"{dest} is verified ({len(manifest['files'])} files)", data=data)
        if probe.get("drift"):
            data["changed_files"] = probe["drift"]
        if ctx.check:
            return ModuleResult(changed=True, msg=f"would fetch {args['repo']} into {dest}", data=data)
        request = {"op": "fetch", "spec": spec, "state": state}
        mkdir = ctx.run(f"mkdir -p -- {shlex.quote(state)}")
        if mkdir.rc != 0:
            raise WorkerError(f"cannot create {state}: {mkdir.stderr.strip()}")
        out = call_worker(ctx, python, request, timeout=FETCH_TIMEOUT)
        data.update(out)
        data["manifest"] = posixpath.join(dest, worker.MANIFEST)
        return ModuleResult(changed=True, msg=f"fetched and verified {out['files']} files ({worker.human(out['bytes'])})", data=data)


MODULE = ModelFetchModule
