"""Calling the fetch worker (modules/_fetch_worker.py) on the host: one request, one round trip.

Shared by model_fetch.py (hub and git sources) and _upload.py (source `upload`); neither imports the other's
internals. `quick_probe` reads a verified folder's manifest with one shell command, without Python.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from glmops.modules import _fetch_worker as worker
from glmops.modules.base import ModuleContext


class WorkerError(Exception):
    """The target-side script failed; `msg` names what and the fix, `data` carries details."""

    def __init__(self, msg: str, data: dict[str, Any] | None = None):
        super().__init__(msg)
        self.msg, self.data = msg, data or {}


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


def call_worker(ctx: ModuleContext, python: str, request: dict[str, Any], *, timeout: float | None = 600, site: bool = False) -> dict[str, Any]:
    """Run one worker request on the host with `python` (one round trip); return its data or raise WorkerError.

    Without `site` python starts with -S (no site-packages: faster; the request needs the standard library only).
    """
    flags = "" if site else " -S"
    result = ctx.run(f"{shlex.quote(python)}{flags} -", stdin=worker_program(request), timeout=timeout)
    answer = parse_result(result.stdout, result.stderr, result.rc)
    if not answer.get("ok"):
        raise WorkerError(answer.get("msg", "failed"), answer.get("data"))
    return answer["data"]


def quick_probe(ctx: ModuleContext, dest: str) -> dict[str, Any] | None:
    """The manifest and its drift from one shell command (cat + GNU find), no python and no hashing.

    Returns a probe-shaped dict (manifest, drift) or None when this host's tools cannot tell (no GNU
    find) or there is no manifest: the caller then asks the worker.
    """
    d = shlex.quote(dest)
    result = ctx.run(f"cat {d}/{worker.MANIFEST} 2>/dev/null || exit 3; printf '\n@@glmops-files\n'; "
                     f"cd {d} && find . -path ./.git -prune -o -type f -printf '%P\t%s\t%T@\t%C@\n'")
    if result.rc != 0:
        return None
    text, _, listing = result.stdout.partition("\n@@glmops-files\n")
    try:
        manifest = json.loads(text)
        files = manifest["files"]
        seen: dict[str, tuple[int, int, int]] = {}
        for line in listing.splitlines():
            rel, size, *times = line.rsplit("\t", 3)
            seen[rel] = (int(size), *(int(t.partition(".")[0]) * 10**9 + int((t.partition(".")[2] + "0" * 9)[:9]) for t in times))
        drift = []  # size, mtime and ctime (not in an older manifest); the worker hashes a file whose ctime alone moved
        for rel, entry in files.items():
            n = 3 if "ctime_ns" in entry else 2
            if seen.get(rel, ())[:n] != (entry.get("size"), entry.get("mtime_ns"), entry.get("ctime_ns"))[:n]:
                drift.append(rel)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return {"manifest": manifest, "drift": drift}
