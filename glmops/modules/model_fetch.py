"""model_fetch: put a model folder on the host from git-lfs, ModelScope, Hugging Face or the controller, verified."""

from __future__ import annotations

import json
import posixpath
import shlex
import time
from dataclasses import replace
from typing import Any

from glmops.errors import ArgumentError, ConnectionFailure
from glmops.modules import _detached
from glmops.modules import _fetch_worker as worker
from glmops.modules._fetch_call import WorkerError, call_worker, quick_probe, worker_program
from glmops.modules._output import excerpt
from glmops.modules._upload import upload
from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan

SOURCES = ("modelscope", "huggingface", "git", "upload")
CLIENTS = {"modelscope": ("modelscope", "modelscope"), "huggingface": ("huggingface_hub", "huggingface_hub")}  # import, pip name


def state_dir(dest: str) -> str:
    """Where a fetch keeps its log, pid, progress and result on the host: beside dest, never inside it."""
    parent, name = posixpath.split(dest.rstrip("/") or "/")
    return posixpath.join(parent, f".{name}.glmops-fetch")


def fetch_paths(state: str) -> _detached.Paths:
    return _detached.Paths(pid_file=posixpath.join(state, "fetch.pid"), log_file=posixpath.join(state, "fetch.log"))


def _poll_script(state: str, paths: _detached.Paths) -> str:
    """sh: the detached fetch's status, then its request, progress and result files (one round trip)."""
    q = lambda name: shlex.quote(posixpath.join(state, name))  # noqa: E731
    return (_detached.FUNCTIONS + _detached.status_lines(paths)
            + f"; echo @@request; cat {q('request.json')} 2>/dev/null; echo; echo @@progress; cat {q('progress.json')} 2>/dev/null;"
            f" echo; echo @@result; cat {q('result.json')} 2>/dev/null; echo")


def _poll(ctx: ModuleContext, state: str, paths: _detached.Paths) -> tuple[_detached.Status, dict[str, Any]]:
    result = ctx.run(_poll_script(state, paths), timeout=120)
    if "@@script" not in result.stdout:
        raise WorkerError(f"cannot read the state of the fetch in {state}: {(result.stderr or result.stdout).strip()}")
    status = _detached.parse_status(result.stdout)
    files: dict[str, Any] = {}
    rest = result.stdout.partition("\n@@status-end\n")[2]
    for name in ("request", "progress", "result"):
        text = rest.partition(f"@@{name}\n")[2].partition("\n@@")[0].strip()
        try:
            files[name] = json.loads(text) if text else None
        except ValueError:
            files[name] = None
    return status, files


def run_detached(ctx: ModuleContext, python: str, request: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Run the fetch on the host detached from this SSH session, or attach to the one already running; follow it.

    The download goes on when the connection drops or the user presses Ctrl-C; the next run attaches
    to it (same request) or starts it again, and the sources resume where they stopped.
    """
    state = request["state"]
    paths = fetch_paths(state)
    status, files = _poll(ctx, state, paths)
    wanted = {k: v for k, v in request["spec"].items() if k != "drift"}
    if status.running:
        running = {k: v for k, v in ((files.get("request") or {}).get("spec") or {}).items() if k != "drift"}
        if running != wanted:
            raise WorkerError(f"another fetch into {request['spec']['dest']} is running on the host (pid {status.pid}) with "
                              "other arguments; wait for it or stop it (kill that pid), then run again",
                              {"pid": status.pid, "running_request": running})
        data["attached"] = True
    else:
        made = ctx.run(f"mkdir -p -- {shlex.quote(state)} && rm -f -- {shlex.quote(posixpath.join(state, 'result.json'))}")
        if made.rc != 0:
            raise WorkerError(f"cannot create {state} on the host: {made.stderr.strip()}")
        ctx.conn.put_bytes(json.dumps(request).encode(), posixpath.join(state, "request.json"), become=ctx.become)
        program = posixpath.join(state, "worker.py")
        ctx.conn.put_bytes(worker_program(request), program, become=ctx.become)
        script = _detached.build_script(f"exec {shlex.quote(python)} {shlex.quote(program)}", environment=ctx.environment)
        status = _detached.start(ctx, paths, script, wait=0)  # under the host lock: of two runs at once, one starts
        data["attached"] = status.attached  # the other follows the fetch that one started
    data["pid"] = status.pid
    data["log"] = paths.log_file
    try:
        return follow(ctx, state, paths)
    except ConnectionFailure as exc:
        raise ConnectionFailure(exc.message, hint=f"the download goes on on the host (pid {status.pid}, log {paths.log_file}); "
                                "run the task again to attach to it") from None


POLL_INTERVAL = 1.0


def follow(ctx: ModuleContext, state: str, paths: _detached.Paths) -> dict[str, Any]:
    """Poll the detached fetch until it ends, reporting its progress; return its result or raise WorkerError."""
    delay = 0.1  # short fetches end quickly; long ones are polled every POLL_INTERVAL
    while True:
        status, files = _poll(ctx, state, paths)
        progress = files.get("progress") or {}
        if progress:
            ctx.progress(progress.get("done") or 0, progress.get("total"), progress.get("msg") or "")
        answer = files.get("result")
        if not status.running:
            if answer is None:
                log = _detached.tail(ctx, paths.log_file, 20).strip()
                raise WorkerError(f"the fetch on the host ended without a result (exit code {status.exit_code}); run again to "
                                  f"resume it. Last lines of {paths.log_file}:\n{log}")
            if not answer.get("ok"):
                raise WorkerError(answer.get("msg", "failed"), answer.get("data"))
            return answer["data"]
        time.sleep(delay)
        delay = min(delay * 1.5, POLL_INTERVAL)


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
        "filesystem cannot hold the model (an upload counts the bytes kept in part files by an interrupted "
        "one, and names them). After, every file is checked: LFS pointer files left behind, "
        "truncated files and SHA-256 / LFS oid mismatches fail the task and are named with the fix. A "
        "verified folder gets `DEST/.glmops-manifest.json` (each file's size, SHA-256, mtime and ctime). "
        "The quick check of a re-run (one round trip, no hashing, changed=false) compares size, mtime "
        "and ctime, the inode change time that every write, chmod or chown moves and `touch` cannot "
        "set back; a file whose ctime alone moved (an edit with its mtime put back, a chmod) is hashed "
        "again and fetched again only when its SHA-256 differs (else its new ctime is recorded; with "
        "`verify: false` no hash is recorded and only size and mtime count). An upload checks the "
        "controller's files the same way. Check mode "
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
        "pip_args": Arg("str", default="", help="More pip arguments for installing the hub client (a mirror: "
                        "'-i https://mirror/simple'), split as a shell would."),
        "pip_environment": Arg("dict", default={}, help="Environment added for that pip install only (a proxy: "
                               "https_proxy...); the download itself runs with the task's `environment:`."),
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

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        for field in ("repo", "revision", "dest", "python", "endpoint"):
            _refuse_option(args.get(field), field, ctx.pos)
        dest = args["dest"].rstrip("/") or "/"
        if dest == "~" or dest.startswith("~/"):  # the home of the user the task runs as
            home = ctx.run('printf %s "$HOME"').stdout
            dest = home.rstrip("/") + dest[1:]
        if not dest.startswith("/"):
            return ModuleResult(failed=True, msg=f"dest must be an absolute path on the host (or start with ~/), got {args['dest']!r}")
        args = dict(args, dest=dest)
        try:
            if args["source"] == "upload":
                return (yield from upload(ctx, args))
            return (yield from self._fetch(ctx, args))
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

    def _fetch(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        dest, python = args["dest"], args["python"]
        spec = self._spec(args)
        state = state_dir(dest)
        client = CLIENTS.get(args["source"])
        data: dict[str, Any] = {"dest": dest, "source": args["source"], "repo": args["repo"]}
        quick = quick_probe(ctx, dest)
        probe = quick if quick is not None and self.verified(quick, spec) else call_worker(ctx, python, {"op": "probe", "dest": dest, "state": state})
        if self.verified(probe, spec):
            manifest = probe["manifest"]
            data.update(files=len(manifest["files"]), bytes=manifest["total_bytes"], manifest=posixpath.join(dest, worker.MANIFEST))
            return ModuleResult(msg=f"{dest} is verified ({len(manifest['files'])} files)", data=data)
        if probe.get("drift"):
            data["changed_files"] = probe["drift"]
        if client and self._client_missing(ctx, python, client[0]):
            data["installed"] = client[1]
        if data.get("installed"):
            yield Change(call=lambda ctx: self._install_client(ctx, python, client[1], args),  # type: ignore[index]
                                     reason=f"install {client[1]} into {python}")  # type: ignore[index]
        request = {"op": "fetch", "spec": dict(spec, drift=probe.get("drift") or []), "state": state}
        fetched = yield Change(call=lambda ctx: run_detached(ctx, python, request, data), reason=f"fetch {args['repo']} into {dest}")
        if not fetched.ran:  # check mode: what would be fetched, as far as the host can tell without the client
            extra = f" (after installing {client[1]} into {python})" if data.get("installed") else ""  # type: ignore[index]
            what = ""
            if not data.get("installed"):
                plan = call_worker(ctx, python, {"op": "plan", "spec": dict(spec, drift=probe.get("drift") or [])}, site=True)
                data.update(to_fetch=plan["files"], bytes_to_fetch=plan["bytes"])
                if plan["bytes"] is not None:
                    what = f" {len(plan['files'])} files ({worker.human(plan['bytes'])})"
            return ModuleResult(msg=f"would fetch{what} from {args['repo']} into {dest}{extra}", data=data)
        out = fetched.value
        data.update(out)
        data["manifest"] = posixpath.join(dest, worker.MANIFEST)
        return ModuleResult(msg=f"fetched and verified {out['files']} files ({worker.human(out['bytes'])})", data=data)


    @staticmethod
    def _client_missing(ctx: ModuleContext, python: str, module: str) -> bool:
        found = ctx.run(f"{shlex.quote(python)} -c {shlex.quote(f'import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)')}")
        if found.rc not in (0, 1):
            raise WorkerError(f"cannot run {python} on the host: {(found.stderr or found.stdout).strip()[-500:]}")
        return found.rc == 1

    @staticmethod
    def _install_client(ctx: ModuleContext, python: str, package: str, args: dict[str, Any]) -> None:
        """pip install the hub client into the host's python (downloading needs no torch), with `pip_args` and the
        task's environment plus `pip_environment` (the proxy pip needs even where the download goes without it)."""
        environment = {**ctx.environment, **{str(k): str(v) for k, v in (args.get("pip_environment") or {}).items()}}
        try:
            extra = shlex.split(args.get("pip_args") or "")
        except ValueError as exc:
            raise WorkerError(f"pip_args is not a valid argument list ({exc}): {args.get('pip_args')!r}") from None
        words = " ".join(shlex.quote(word) for word in extra)
        command = f"{shlex.quote(python)} -m pip install --disable-pip-version-check -q {words} -- {shlex.quote(package)} 2>&1"
        done = replace(ctx, environment=environment).run(command, timeout=1800)
        if done.rc != 0:
            raise WorkerError(f"cannot install {package} into {python} ({pip_setting(environment, extra)}):\n"
                              f"{excerpt(done.stdout)}\nFix: check that proxy or mirror (AutoDL: /etc/network_turbo, read by "
                              f"the network_turbo role; pip_extra_args), or install it there yourself ({python} -m pip "
                              f"install {package}), or point `python` at an env that has it")


PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")


def pip_setting(environment: dict[str, str], extra: list[str]) -> str:
    """How pip reached the index, in words, without the values (a proxy or mirror URL may hold credentials)."""
    proxies = [name for name in PROXY_VARS if environment.get(name)]
    via = f"through the proxy in {', '.join(proxies)}" if proxies else "without a proxy (no http_proxy/https_proxy set)"
    return f"pip ran {via}, " + ("with the pip_args given" if extra else "with no pip_args (no mirror)")


MODULE = ModelFetchModule
