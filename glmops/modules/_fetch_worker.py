"""The target side of `model_fetch`: one stdlib-only script that the module runs with the target's python.

It is sent as the program text on stdin (`python3 -`), followed by one line that calls `main(...)`
with a JSON request, so no value ever passes through a shell or an argument list. It prints one JSON
object on stdout (between markers, so that a chatty client library cannot corrupt it).

Requests (`op`):
- probe: the folder's state in one pass: the manifest and whether every file it lists still has its
  size, mtime and ctime (hashing only a file whose ctime alone changed), free bytes on the
  filesystem, whether a git checkout is there.
- seal: write the manifest for files whose hashes the controller already checked (upload).
- fetch: download (git, modelscope, huggingface), preflight the disk, verify, write the manifest,
  drop .git; writes `progress.json` and `result.json` into `state` as it goes, so that a detached
  run can be followed and its outcome read later.

Must run on Python 3.8+ with no third-party package (the hub clients are imported only when used).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

MANIFEST = ".glmops-manifest.json"
POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
MARK = "__glmops_fetch_result__"
SKIP_DIRS = {".git", ".cache", "._____temp", ".glmops-fetch"}
CHUNK = 1 << 20


class FetchError(Exception):
    """A failure meant for the user: `msg` says what and the fix."""

    def __init__(self, msg, **data):
        super().__init__(msg)
        self.msg = msg
        self.data = data


# -- files ------------------------------------------------------------------------------------

def selected(rel, include, exclude):
    """Does `rel` pass the include/exclude globs (matched against the path and the file name)?"""
    name = rel.rsplit("/", 1)[-1]

    def hit(patterns):
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)

    if include and not hit(include):
        return False
    return not (exclude and hit(exclude))


def walk(dest, include=(), exclude=(), skip=()):
    """Regular files under dest, relative with '/', without .git, caches, part files, the manifest and `skip`."""
    found = []
    for root, dirs, files in os.walk(dest):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if name == MANIFEST or ".glmops-" in name or name.endswith(".incomplete"):
                continue
            path = os.path.join(root, name)
            if not os.path.isfile(path) or os.path.islink(path) and not os.path.exists(path):
                continue
            rel = os.path.relpath(path, dest).replace(os.sep, "/")
            if rel not in skip and selected(rel, include, exclude):
                found.append(rel)
    return found


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pointer_of(path, size):
    """The LFS pointer a small file holds ({'oid', 'size'}), or None when it is real content."""
    if size >= 1024:
        return None
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head.startswith(POINTER_PREFIX):
        return None
    info = {}
    for line in head.decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "oid" and value.startswith("sha256:"):
            info["oid"] = value[7:]
        elif key == "size" and value.isdigit():
            info["size"] = int(value)
    return info


def free_bytes(path):
    """Free bytes for an unprivileged writer on the filesystem that holds `path` (or would)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize, probe


def read_manifest(dest):
    try:
        with open(os.path.join(dest, MANIFEST)) as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None
    except (OSError, ValueError):
        return None


def manifest_drift(dest, manifest):
    """Files listed in the manifest that are missing or changed since they were verified, and whether
    `manifest` was refreshed (see below).

    The quick check is size, mtime and the inode change time (ctime, which every write, chmod, chown
    or `touch -d` bumps and which cannot be set back). A file whose size and mtime are as recorded
    but whose ctime is not (its mtime put back after an edit, or only its attributes changed) is
    hashed again: drift when its sha256 is not the recorded one; else its new ctime is put in
    `manifest` (the caller saves it, so the next run does not hash it again). A file recorded without
    a hash (`verify: false`) is checked by size and mtime only.
    """
    drift, refreshed = [], False
    for rel, entry in manifest["files"].items():
        path = os.path.join(dest, rel)
        try:
            st = os.stat(path)
        except OSError:
            drift.append(rel)
            continue
        if st.st_size != entry.get("size") or st.st_mtime_ns != entry.get("mtime_ns"):
            drift.append(rel)
        elif entry.get("ctime_ns") is not None and entry.get("sha256") and st.st_ctime_ns != entry["ctime_ns"]:
            if sha256_of(path) != entry["sha256"]:
                drift.append(rel)
            else:
                entry["ctime_ns"], refreshed = st.st_ctime_ns, True
    return drift, refreshed


def save_manifest(dest, manifest):
    """Write the manifest atomically, through a temporary file created new (never through a symlink
    planted at its predictable name)."""
    tmp = os.path.join(dest, MANIFEST + ".glmops-tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(dest, MANIFEST))


def write_manifest(dest, spec, hashes):
    """Record every verified file with its size, sha256 and mtime; written atomically."""
    files = {}
    for rel, sha in sorted(hashes.items()):
        st = os.stat(os.path.join(dest, rel))
        files[rel] = {"size": st.st_size, "sha256": sha, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    manifest = {
        "version": 1,
        "source": spec.get("source"),
        "repo": spec.get("repo"),
        "revision": spec.get("revision"),
        "include": spec.get("include") or [],
        "exclude": spec.get("exclude") or [],
        "verified_at": int(time.time()),
        "total_bytes": sum(f["size"] for f in files.values()),
        "files": files,
    }
    if spec.get("source_meta"):
        manifest["source_meta"] = spec["source_meta"]
    save_manifest(dest, manifest)
    return manifest


def verify(dest, expected, include=(), exclude=(), state=None, skip=()):
    """Hash every selected file; compare with `expected` {rel: {size, sha256}}; find pointers and truncations.

    Returns {rel: sha256} of the good files, or raises FetchError naming every bad file.
    """
    present = walk(dest, include, exclude, skip)
    total = sum(os.path.getsize(os.path.join(dest, rel)) for rel in present) or 1
    done = 0
    hashes, pointers, truncated, mismatched = {}, [], [], []
    for rel in present:
        path = os.path.join(dest, rel)
        size = os.path.getsize(path)
        want = expected.get(rel) or {}
        if pointer_of(path, size) is not None and want.get("size") != size:
            pointers.append(rel)
            continue
        if want.get("size") is not None and size < want["size"]:
            truncated.append("%s (%d of %d bytes)" % (rel, size, want["size"]))
            continue
        sha = sha256_of(path)
        done += size
        if state:
            write_progress(state, done, total, "verifying " + rel, phase="verify")
        if want.get("sha256") and sha != want["sha256"] or want.get("size") is not None and size != want["size"]:
            mismatched.append(rel)
            continue
        hashes[rel] = sha
    seen = set(present)
    missing = sorted(rel for rel in expected if rel not in seen and rel not in skip and selected(rel, include, exclude))
    problems = []
    if pointers:
        problems.append("LFS pointer files instead of content: " + ", ".join(pointers))
    if truncated:
        problems.append("truncated: " + ", ".join(truncated))
    if mismatched:
        problems.append("sha256 differs from the source: " + ", ".join(mismatched))
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if problems:
        fix = ("run the task again: git sources put bad files back to their pointers and pull them again, hub "
               "clients resume and re-check, uploads send them again (or delete the named files and run again)")
        raise FetchError("verification of %s failed: %s. Fix: %s" % (dest, "; ".join(problems), fix),
                         pointers=pointers, truncated=truncated, mismatched=mismatched, missing=missing)
    return hashes


# -- progress ---------------------------------------------------------------------------------

def write_progress(state, done, total, msg, phase="download"):
    if not state:
        return
    tmp = os.path.join(state, "progress.json.tmp")
    with open(tmp, "w") as handle:
        json.dump({"done": done, "total": total, "msg": msg, "phase": phase, "time": time.time(), "pid": os.getpid()}, handle)
    os.replace(tmp, os.path.join(state, "progress.json"))


def tree_bytes(paths):
    total = 0
    for top in paths:
        for root, _dirs, files in os.walk(top):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass
    return total


class Watcher(threading.Thread):
    """Writes progress.json twice a second from the bytes under `paths` while a download runs."""

    def __init__(self, state, paths, total, msg, base=0):
        super().__init__(daemon=True)
        self.state, self.paths, self.total, self.msg, self.base = state, paths, total, msg, base
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.5):
            done = max(0, tree_bytes(self.paths) - self.base)
            if self.total:
                done = min(done, self.total)
            write_progress(self.state, done, self.total, self.msg)

    def stop(self):
        self.stopped.set()
        self.join()


# -- sources ----------------------------------------------------------------------------------

def run_logged(argv, cwd=None, env=None):
    """Run a command with output into our log (stderr); raise FetchError with its tail on failure."""
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(argv, cwd=cwd, env=full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    sys.stderr.write(proc.stdout)
    sys.stderr.flush()
    if proc.returncode != 0:
        raise FetchError("%s failed (exit %d): %s" % (" ".join(argv[:3]), proc.returncode, proc.stdout.strip()[-1500:]))
    return proc.stdout


GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1"}


def git_lfs_expected(dest):
    """{rel: {size, sha256}} of every LFS file at HEAD, read from the committed pointers."""
    names = run_logged(["git", "lfs", "ls-files", "-n"], cwd=dest, env=GIT_ENV).splitlines()
    names = [n for n in names if n]
    if not names:
        return {}
    batch = "".join("HEAD:%s\n" % n for n in names)
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=dest, input=batch.encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=True)
    out, expected, at = proc.stdout, {}, 0
    for name in names:
        header_end = out.index(b"\n", at)
        header = out[at:header_end].split()
        size = int(header[2]) if len(header) == 3 else 0
        body = out[header_end + 1:header_end + 1 + size]
        at = header_end + 1 + size + 1
        info = {}
        for line in body.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "oid" and value.startswith("sha256:"):
                info["sha256"] = value[7:]
            elif key == "size" and value.isdigit():
                info["size"] = int(value)
        if "sha256" in info:
            expected[name] = info
    return expected


def repair_without_git_dir(spec, state):
    """A folder fetched with drop_git_dir whose files changed: clone beside it, fetch only those, move them in."""
    dest = spec["dest"]
    bad = [rel for rel in spec.get("drift") or [] if rel != MANIFEST]
    if not state or not bad:
        raise FetchError("%s is not empty and is not a git checkout of %s; remove it or choose another dest" % (dest, spec["repo"]))
    staging = os.path.join(state, "clone")
    shutil.rmtree(staging, ignore_errors=True)
    sys.stderr.write("no .git in %s (drop_git_dir): fetching %s again in %s\n" % (dest, ", ".join(bad), staging))
    expected, total, meta, _ = fetch_git(dict(spec, dest=staging, include=bad, exclude=[], drift=[]), state)
    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    everything = git_lfs_expected(staging)
    wanted = {rel: e for rel, e in everything.items() if selected(rel, include, exclude)}
    for rel in bad:
        source = os.path.join(staging, rel)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            os.replace(source, os.path.join(dest, rel))
    shutil.rmtree(staging, ignore_errors=True)
    meta["reset"] = bad
    return wanted, total, meta, set(everything) - set(wanted)


def fetch_git(spec, state):
    dest, repo = spec["dest"], spec["repo"]
    if not os.path.isdir(os.path.join(dest, ".git")):
        if os.path.isdir(dest) and os.listdir(dest):
            manifest = read_manifest(dest)
            if manifest and manifest.get("source") == "git" and manifest.get("repo") == repo:
                return repair_without_git_dir(spec, state)
            raise FetchError("%s is not empty and is not a git checkout of %s; remove it or choose another dest" % (dest, repo))
        write_progress(state, 0, None, "cloning " + repo, phase="clone")
        run_logged(["git", "clone", "--no-checkout", "--", repo, dest], env=GIT_ENV)
        git_checkout(dest, spec.get("revision"))
    elif spec.get("revision"):
        run_logged(["git", "fetch", "-q", "--tags", "--force", "origin"], cwd=dest, env=GIT_ENV)
        git_checkout(dest, spec["revision"])
    expected = git_lfs_expected(dest)
    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    wanted = {rel: e for rel, e in expected.items() if selected(rel, include, exclude)}
    # Files whose content is wrong (truncated, corrupted): back to their pointer, so that lfs pull fetches them.
    bad, pointers = [], []
    for rel, entry in sorted(wanted.items()):
        path = os.path.join(dest, rel)
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        if pointer_of(path, size) is not None:
            pointers.append(rel)
        elif size != entry["size"]:
            bad.append(rel)
    if bad:
        for rel in bad:
            os.unlink(os.path.join(dest, rel))
        run_logged(["git", "checkout", "HEAD", "--"] + bad, cwd=dest, env=GIT_ENV)
        sys.stderr.write("reset to their LFS pointers (wrong size): %s\n" % ", ".join(bad))
    objects = os.path.join(dest, ".git", "lfs")
    have = tree_bytes([os.path.join(objects, "objects")])
    total = sum(e["size"] for e in wanted.values())
    needed = max(0, 2 * total - have)  # the object store and the checked-out copy
    free, where = free_bytes(dest)
    if needed > free:
        raise FetchError("not enough disk space at %s: need %d bytes (%s), %d free" % (where, needed, human(needed), free),
                         needed=needed, free=free, path=where)
    watcher = Watcher(state, [objects], total, "git lfs pull " + repo, base=have)
    watcher.start()
    try:
        argv = ["git", "-c", "lfs.concurrenttransfers=4", "lfs", "pull"]
        if include:
            argv += ["--include", ",".join(include)]
        if exclude:
            argv += ["--exclude", ",".join(exclude)]
        run_logged(argv, cwd=dest, env={"GIT_TERMINAL_PROMPT": "0"})
    finally:
        watcher.stop()
    meta = {"commit": run_logged(["git", "rev-parse", "HEAD"], cwd=dest).strip(), "pointers_before": pointers, "reset": bad}
    # include/exclude choose LFS files only; every other file of the checkout is verified and kept.
    return wanted, total, meta, set(expected) - set(wanted)


def git_checkout(dest, revision):
    """Check out `revision` (a branch of origin, a tag or a commit; HEAD of origin when None), detached."""
    target = "origin/HEAD" if not revision else revision
    if revision:
        branch = subprocess.run(["git", "rev-parse", "--verify", "-q", "refs/remotes/origin/%s^{commit}" % revision],
                                cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
        if branch.returncode == 0:
            target = branch.stdout.strip()
    elif subprocess.run(["git", "rev-parse", "--verify", "-q", "origin/HEAD"], cwd=dest, stdout=subprocess.DEVNULL).returncode != 0:
        target = "HEAD"
    run_logged(["git", "checkout", "-q", "--force", "--detach", target, "--"], cwd=dest, env=GIT_ENV)


def git_repair(dest, bad):
    """Put `bad` files back to their pointers and let git lfs fetch and check them out again."""
    for rel in bad:
        try:
            os.unlink(os.path.join(dest, rel))
        except OSError:
            pass
    run_logged(["git", "checkout", "HEAD", "--"] + bad, cwd=dest, env=GIT_ENV)
    run_logged(["git", "lfs", "pull", "--include", ",".join(bad), "--exclude", ""], cwd=dest, env={"GIT_TERMINAL_PROMPT": "0"})


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def huggingface_env(spec):
    if spec.get("endpoint"):
        os.environ["HF_ENDPOINT"] = spec["endpoint"]
        os.environ["HF_HUB_DISABLE_XET"] = "1"  # hf-xet does not honour HF_ENDPOINT
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def huggingface_files(spec):
    """{rel: {size, sha256}} of the selected files, from the hub's model info; and the commit."""
    huggingface_env(spec)
    from huggingface_hub import HfApi

    info = HfApi(endpoint=spec.get("endpoint")).model_info(spec["repo"], revision=spec.get("revision"), files_metadata=True)
    expected = {}
    for sibling in info.siblings or []:
        entry = {"size": sibling.size}
        if sibling.lfs is not None:
            entry["sha256"] = sibling.lfs.sha256
        expected[sibling.rfilename] = entry
    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    return {rel: e for rel, e in expected.items() if selected(rel, include, exclude)}, getattr(info, "sha", None)


def fetch_huggingface(spec, state):
    expected, commit = huggingface_files(spec)
    from huggingface_hub import snapshot_download

    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    total = hub_preflight(spec, expected)
    watcher = Watcher(state, [spec["dest"]], total, "huggingface " + spec["repo"], base=present_bytes(spec["dest"], expected))
    watcher.start()
    try:
        snapshot_download(spec["repo"], revision=spec.get("revision"), local_dir=spec["dest"], endpoint=spec.get("endpoint"),
                          allow_patterns=include or None, ignore_patterns=exclude or None)
    finally:
        watcher.stop()
    return expected, total, {"commit": commit}, None


def modelscope_env(spec):
    endpoint = spec.get("endpoint")
    if endpoint:
        # modelscope >= 1.38 (modelscope_hub) reads MODELSCOPE_ENDPOINT; older ones scheme + domain.
        scheme, _, domain = endpoint.rstrip("/").rpartition("://")
        os.environ["MODELSCOPE_ENDPOINT"] = endpoint.rstrip("/")
        os.environ["MODELSCOPE_DOMAIN"] = domain
        os.environ["MODELSCOPE_URL_SCHEME"] = (scheme or "https") + "://"


def modelscope_files(spec):
    """{rel: {size, sha256}} of the selected files, from the hub's file list (sha256 when it gives one)."""
    modelscope_env(spec)
    from modelscope.hub.api import HubApi

    files = HubApi().get_model_files(spec["repo"], revision=spec.get("revision") or "master", recursive=True)
    expected = {}
    for item in files:
        if item.get("Type") == "tree":
            continue
        expected[item["Path"]] = {"size": item.get("Size"), "sha256": item.get("Sha256") or None}
    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    return {rel: e for rel, e in expected.items() if selected(rel, include, exclude)}, None


def fetch_modelscope(spec, state):
    expected, _ = modelscope_files(spec)
    from modelscope.hub.snapshot_download import snapshot_download

    revision = spec.get("revision") or None
    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    total = hub_preflight(spec, expected)
    watcher = Watcher(state, [spec["dest"]], total, "modelscope " + spec["repo"], base=present_bytes(spec["dest"], expected))
    watcher.start()
    try:
        snapshot_download(spec["repo"], revision=revision, local_dir=spec["dest"],
                          allow_patterns=include or None, ignore_patterns=exclude or None)
    finally:
        watcher.stop()
    return expected, total, {}, None


def present_bytes(dest, expected):
    done = 0
    for rel, entry in expected.items():
        try:
            if os.path.getsize(os.path.join(dest, rel)) == entry.get("size"):
                done += entry["size"]
        except OSError:
            pass
    return done


def drop_bad(dest, expected, drift):
    """Delete files the hub client would otherwise keep: changed since verification, or of the wrong size."""
    dropped = []
    for rel, entry in expected.items():
        path = os.path.join(dest, rel)
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        if rel in drift or entry.get("size") is not None and size != entry["size"]:
            os.unlink(path)
            dropped.append(rel)
    if dropped:
        sys.stderr.write("deleted to be downloaded again: %s\n" % ", ".join(dropped))
    return dropped


def hub_preflight(spec, expected):
    drop_bad(spec["dest"], expected, set(spec.get("drift") or ()))
    total = sum(e.get("size") or 0 for e in expected.values())
    needed = total - present_bytes(spec["dest"], expected)
    free, where = free_bytes(spec["dest"])
    if needed > free:
        raise FetchError("not enough disk space at %s: need %d bytes (%s), %d free" % (where, needed, human(needed), free),
                         needed=needed, free=free, path=where)
    os.makedirs(spec["dest"], exist_ok=True)
    return total


SOURCES = {"git": fetch_git, "huggingface": fetch_huggingface, "modelscope": fetch_modelscope}


# -- requests ---------------------------------------------------------------------------------

def op_probe(req):
    dest = req["dest"]
    out = {"exists": os.path.isdir(dest), "git": os.path.isdir(os.path.join(dest, ".git"))}
    out["free"], out["free_path"] = free_bytes(dest)
    manifest = read_manifest(dest) if out["exists"] else None
    out["manifest"] = None
    if manifest is not None:
        out["drift"], refreshed = manifest_drift(dest, manifest)
        if refreshed and not out["drift"]:
            try:
                save_manifest(dest, manifest)
            except OSError:  # not writable for this user: the next run hashes those files again
                pass
        out["manifest"] = manifest
    out["empty"] = not out["exists"] or not os.listdir(dest)
    state = req.get("state")
    if state:
        for name in ("progress.json", "result.json"):
            try:
                with open(os.path.join(state, name)) as handle:
                    out[name.split(".")[0]] = json.load(handle)
            except (OSError, ValueError):
                pass
    return out


def op_plan(req):
    """Check mode: which files a fetch would download and how many bytes (None when only a clone can tell)."""
    spec = req["spec"]
    dest, drift = spec["dest"], set(spec.get("drift") or ())
    if spec["source"] == "git":
        if not os.path.isdir(os.path.join(dest, ".git")):
            return {"files": None, "bytes": None, "why": "sizes are known once the repository is cloned"}
        expected = git_lfs_expected(dest)
        include, exclude = spec.get("include") or [], spec.get("exclude") or []
        expected = {rel: e for rel, e in expected.items() if selected(rel, include, exclude)}
    else:
        expected, _ = (huggingface_files if spec["source"] == "huggingface" else modelscope_files)(spec)
    todo = []
    for rel, entry in sorted(expected.items()):
        path = os.path.join(dest, rel)
        try:
            size = os.path.getsize(path)
        except OSError:
            todo.append(rel)
            continue
        if rel in drift or size != entry.get("size") or pointer_of(path, size) is not None:
            todo.append(rel)
    return {"files": todo, "bytes": sum(expected[rel].get("size") or 0 for rel in todo)}


def op_hash(req):
    """sha256 of the listed files {rel: size} that are there with that size (an upload without a manifest entry)."""
    out = {}
    for rel, size in req["files"].items():
        path = os.path.join(req["dest"], rel)
        if os.path.isfile(path) and os.path.getsize(path) == size:
            out[rel] = sha256_of(path)
    return {"hashes": out}


def op_seal(req):
    """Upload: the controller checked each file's sha256 on arrival; record them with their mtimes."""
    manifest = write_manifest(req["dest"], req["spec"], req["hashes"])
    return {"manifest": manifest}


def op_fetch(req):
    spec, state = req["spec"], req.get("state")
    if state:
        os.makedirs(state, exist_ok=True)
        for name in ("result.json",):
            try:
                os.unlink(os.path.join(state, name))
            except OSError:
                pass
    started = time.time()
    expected, total, meta, skip = SOURCES[spec["source"]](spec, state)
    dest = spec["dest"]
    include, exclude = spec.get("include") or [], spec.get("exclude") or []
    if skip is not None:  # git: the selection was applied to the LFS files
        include, exclude = [], []
    if not spec.get("verify", True):
        hashes = {rel: "" for rel in walk(dest, include, exclude, skip or ())}
    else:
        try:
            hashes = verify(dest, expected, include, exclude, state, skip or ())
        except FetchError as exc:
            bad = exc.data.get("pointers", []) + [t.split(" (")[0] for t in exc.data.get("truncated", [])] + exc.data.get("mismatched", [])
            if not bad or spec["source"] == "git" and not os.path.isdir(os.path.join(dest, ".git")):
                raise
            if spec["source"] == "git":
                git_repair(dest, bad)  # once: back to pointers, then fetched and checked out again
            else:  # once: delete them and let the client download them again
                SOURCES[spec["source"]](dict(spec, drift=bad), state)
            hashes = verify(dest, expected, include, exclude, state, skip or ())
    spec = dict(spec, source_meta=meta)
    manifest = write_manifest(dest, spec, hashes)
    dropped = 0
    if spec.get("drop_git_dir") and os.path.isdir(os.path.join(dest, ".git")):
        dropped = tree_bytes([os.path.join(dest, ".git")])
        shutil.rmtree(os.path.join(dest, ".git"))
    write_progress(state, total, total, "done", phase="done")
    return {"files": len(manifest["files"]), "bytes": manifest["total_bytes"], "downloaded": total,
            "git_dir_dropped_bytes": dropped, "seconds": round(time.time() - started, 3), "meta": meta}


OPS = {"probe": op_probe, "plan": op_plan, "hash": op_hash, "seal": op_seal, "fetch": op_fetch}


def main(req):
    """Run one request; print its JSON result between markers; store it in state/result.json too."""
    try:
        result = {"ok": True, "data": OPS[req["op"]](req)}
    except FetchError as exc:
        result = {"ok": False, "msg": exc.msg, "data": exc.data}
    except Exception as exc:  # noqa: BLE001 - reported to the controller, not a traceback
        result = {"ok": False, "msg": "%s: %s" % (type(exc).__name__, exc), "data": {}}
    state = req.get("state")
    if state and req["op"] == "fetch":
        tmp = os.path.join(state, "result.json.tmp")
        with open(tmp, "w") as handle:
            json.dump(result, handle)
        os.replace(tmp, os.path.join(state, "result.json"))
    sys.stdout.write("\n%s%s%s\n" % (MARK, json.dumps(result), MARK))
    sys.stdout.flush()
    return 0 if result["ok"] else 1
