"""model_fetch source `upload`: a controller folder to the host over the run's connection, resumable and verified."""

from __future__ import annotations

import os
import posixpath
import shlex
from typing import Any

from glmops.modules import _fetch_worker as worker
from glmops.modules._fetch_call import WorkerError, call_worker, quick_probe
from glmops.modules.base import Change, ModuleContext, ModuleResult, Plan


def local_files(src: str, include: list[str], exclude: list[str]) -> dict[str, tuple[int, int, int]]:
    """{rel: (size, mtime_ns, ctime_ns)} of the files to upload (the quick check of a controller file, as on the host)."""
    return {rel: (st.st_size, st.st_mtime_ns, st.st_ctime_ns) for rel in worker.walk(src, include, exclude)
            for st in [os.stat(os.path.join(src, rel))]}


def preflight(ctx: ModuleContext, dest: str, todo: dict[str, int], probe: dict[str, Any]) -> None:
    """Fail with the numbers when the files to send do not fit in the free space at `dest`.

    Bytes that an interrupted upload left in a part file beside a destination (a disk that filled up,
    Ctrl-C) are counted as already there: the resume appends only the rest.
    """
    needed, free = sum(todo.values()), probe["free"]
    if needed <= free:
        return
    sizes = {posixpath.join(dest, rel): size for rel, size in todo.items()}
    kept = ctx.conn.kept_parts(list(sizes), become=ctx.become)
    in_parts = sum(have for path, (_, have) in kept.items() if have <= sizes[path])  # a longer part starts over
    if needed - in_parts <= free:
        return
    rest = needed - in_parts
    kept_text = (f": {worker.human(needed)} to send, less {in_parts} bytes already in part files that resume: "
                 + ", ".join(part for part, _ in sorted(kept.values()))) if kept else ""
    raise WorkerError(f"not enough disk space at {probe['free_path']}: need {rest} bytes ({worker.human(rest)}{kept_text}), "
                      f"{free} free ({worker.human(free)}); free space there or choose another dest",
                      {"needed": rest, "free": free, "path": probe["free_path"], "kept_parts": dict(kept.values())})


def upload(ctx: ModuleContext, args: dict[str, Any]) -> Plan:
    """source upload: send what differs (one change: the transfer and the seal); verified already: nothing."""
    src, dest, python = os.path.expanduser(args["src"]), args["dest"], args["python"]
    if not os.path.isdir(src):
        raise WorkerError(f"src {src} is not a folder on the controller")
    include, exclude = args.get("include") or [], args.get("exclude") or []
    files = local_files(src, include, exclude)
    if not files:
        raise WorkerError(f"src {src} holds no file to upload" + (" (after include/exclude)" if include or exclude else ""))
    probe = quick_probe(ctx, dest)  # one shell command: enough when the folder is verified
    if probe is None or probe["drift"] or set((probe["manifest"].get("files") or {})) != set(files):
        probe = call_worker(ctx, python, {"op": "probe", "dest": dest})
    manifest = probe.get("manifest") or {}
    listed: dict[str, Any] = manifest.get("files", {}) if manifest.get("source") == "upload" else {}
    drift = set(probe.get("drift") or [])
    seen: dict[str, list[int]] = (manifest.get("source_meta") or {}).get("local", {}) if listed else {}
    hashes: dict[str, str] = {}
    # Local hashes only where a comparison needs one: the manifest's is reused when the local file has
    # the size, mtime and ctime it had then; files sent fresh are hashed while they are read for sending.
    for rel, (size, mtime, ctime) in files.items():
        entry = listed.get(rel)
        if entry and seen.get(rel) == [size, mtime, ctime] and entry.get("size") == size:
            hashes[rel] = entry["sha256"]
        elif entry and rel not in drift:
            hashes[rel] = worker.sha256_of(os.path.join(src, rel))
    complete = {rel for rel in files if rel in listed and rel not in drift and listed[rel].get("sha256") == hashes[rel]}
    unknown = [rel for rel in files if rel not in complete and (rel not in listed or rel in drift)]
    if unknown and probe.get("exists"):  # files present without a trustworthy manifest entry: hash them there
        there = call_worker(ctx, python, {"op": "hash", "dest": dest, "files": {rel: files[rel][0] for rel in unknown}})["hashes"]
        for rel, sha in there.items():  # only files of the right size were hashed there
            hashes.setdefault(rel, worker.sha256_of(os.path.join(src, rel)))
            if sha == hashes[rel]:
                complete.add(rel)
    todo = sorted(rel for rel in files if rel not in complete)
    needed = sum(files[rel][0] for rel in todo)
    data: dict[str, Any] = {"dest": dest, "source": "upload", "src": src, "files": len(files),
                            "bytes": sum(size for size, _, _ in files.values()), "to_send": todo, "bytes_to_send": needed}
    if not todo and set(listed) == set(files) and not drift:
        data["bytes_sent"] = 0
        return ModuleResult(msg=f"{dest} is verified ({len(files)} files)", data=data)
    done = yield Change(call=lambda ctx: _send(ctx, args, files, todo, hashes, probe), reason=f"upload {len(todo)} files to {dest}")
    if not done.ran:  # check mode
        return ModuleResult(msg=f"would upload {len(todo)} files ({worker.human(needed)})", data=data)
    data["bytes_sent"] = done.value
    return ModuleResult(msg=f"uploaded {len(todo)} files ({worker.human(done.value)} sent)", data=data)


def _send(ctx: ModuleContext, args: dict[str, Any], files: dict[str, tuple[int, int, int]], todo: list[str], hashes: dict[str, str],
          probe: dict[str, Any]) -> int:
    """Send the files of `todo` (resuming part files), then seal the manifest; return the bytes sent."""
    src, dest, python = os.path.expanduser(args["src"]), args["dest"], args["python"]
    include, exclude = args.get("include") or [], args.get("exclude") or []
    needed = sum(files[rel][0] for rel in todo)
    if "free" not in probe:
        probe = call_worker(ctx, python, {"op": "probe", "dest": dest})
    preflight(ctx, dest, {rel: files[rel][0] for rel in todo}, probe)
    dirs = sorted({posixpath.dirname(posixpath.join(dest, rel)) for rel in todo} | {dest})
    made = ctx.run("mkdir -p -- " + " ".join(shlex.quote(d) for d in dirs))
    if made.rc != 0:
        raise WorkerError(f"cannot create {dest}: {made.stderr.strip()}")
    sent = 0
    total_done = 0
    for rel in todo:
        size = files[rel][0]
        reports: list[int] = []

        def progress(done: int, _total: int, rel: str = rel, reports: list[int] = reports) -> None:
            reports.append(done)
            ctx.progress(total_done + done, needed, rel)

        try:
            hashes[rel] = ctx.conn.put_file(os.path.join(src, rel), posixpath.join(dest, rel), become=ctx.become, progress=progress,
                                            sha256=hashes.get(rel))
        except OSError as exc:
            raise WorkerError(f"upload of {rel} failed: {exc}; run again to resume", {"bytes_sent": sent}) from None
        # put_file first reports where the transfer starts (0, or the size of a part file kept from a broken upload).
        sent += reports[-1] - reports[0] if reports else size
        total_done += size
    ctx.progress(needed, needed, "verified")
    meta = {"local": {rel: list(quick) for rel, quick in files.items()}}
    spec = {"source": "upload", "repo": None, "revision": None, "include": include, "exclude": exclude, "source_meta": meta}
    call_worker(ctx, python, {"op": "seal", "dest": dest, "spec": spec, "hashes": hashes})
    return sent
