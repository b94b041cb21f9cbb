"""model_fetch with real git-lfs (file:// remote), the real test sshd, SFTP resume and a real tmpfs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import tmpfs
from modhelp import run_module

from glmops.connection.factory import open_connection
from glmops.errors import ArgumentError
from glmops.modules import get_module
from glmops.modules.base import ModuleContext, validate_args
from glmops.playbook.templating import Templar

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lfs_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bare repository with a tiny model: two LFS files and two plain ones (file:// remote)."""
    base = tmp_path_factory.mktemp("lfs")
    src = base / "src"
    src.mkdir()
    run = lambda *a, cwd=src: subprocess.run([*GIT, *a], cwd=cwd, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    run("lfs", "track", "*.safetensors", "*.bin")
    (src / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 64}))
    (src / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0}}))
    (src / "model.safetensors").write_bytes(os.urandom(600 * 1024))
    (src / "pytorch_model.bin").write_bytes(os.urandom(200 * 1024))
    run("add", ".")
    run("commit", "-q", "-m", "tiny model")
    bare = base / "repo.git"
    subprocess.run([*GIT, "init", "-q", "--bare", str(bare)], check=True)
    run("remote", "add", "origin", str(bare))
    run("push", "-q", "origin", "main")
    return {"url": f"file://{bare}", "src": src, "sha": {p.name: sha(p) for p in src.iterdir() if p.is_file()}}




def manifest(dest: Path) -> dict[str, Any]:
    return json.loads((dest / ".glmops-manifest.json").read_text())


def test_git_fetch_verifies_writes_manifest_and_a_rerun_changes_nothing(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tiny"
    check = run_module(conn, "model_fetch", check=True, source="git", repo=lfs_repo["url"], dest=str(dest))
    assert check.changed and not dest.exists()
    first = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest))
    assert first.changed and not first.failed, first.msg
    for name, digest in lfs_repo["sha"].items():
        assert sha(dest / name) == digest
    listed = manifest(dest)["files"]
    assert set(listed) == set(lfs_repo["sha"]) | {".gitattributes"}
    assert listed["model.safetensors"]["size"] == 600 * 1024
    again = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest))
    assert not again.changed and not again.failed, again.msg


def test_skip_smudge_clone_pointer_files_are_detected_and_pulled(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    # What the guides' users end up with: a clone whose LFS files are 130-byte pointers.
    subprocess.run(["git", "clone", "-q", lfs_repo["url"], str(dest)], env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"}, check=True)
    assert (dest / "model.safetensors").read_bytes().startswith(b"version https://git-lfs.github.com/spec/v1")
    result = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest))
    assert result.changed and not result.failed, result.msg
    assert sorted(result.data["meta"]["pointers_before"]) == ["model.safetensors", "pytorch_model.bin"]
    assert sha(dest / "model.safetensors") == lfs_repo["sha"]["model.safetensors"]


def test_truncated_file_is_detected_and_repaired_by_a_rerun(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    assert not run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest)).failed
    with open(dest / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    result = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest))
    assert result.changed and not result.failed, result.msg
    assert result.data["changed_files"] == ["model.safetensors"]
    assert result.data["meta"]["reset"] == ["model.safetensors"]
    assert sha(dest / "model.safetensors") == lfs_repo["sha"]["model.safetensors"]


def edit_keeping_size_and_mtime(path: Path, offset: int = 100) -> None:
    """A hand edit that the size and mtime cannot show: one byte flipped, the mtime put back."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_hand_edit_that_keeps_size_and_mtime_is_noticed_by_a_rerun(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    assert not run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest)).failed
    edit_keeping_size_and_mtime(dest / "model.safetensors")
    result = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest))
    assert result.changed and not result.failed, result.msg
    assert result.data["changed_files"] == ["model.safetensors"]
    assert sha(dest / "model.safetensors") == lfs_repo["sha"]["model.safetensors"]
    assert not run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest)).changed


def test_upload_notices_hand_edits_that_keep_size_and_mtime_on_both_sides(conn: Any, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    dest = tmp_path / "remote" / "model"
    upload = {"source": "upload", "src": str(src), "dest": str(dest)}
    assert run_module(conn, "model_fetch", **upload).changed

    edit_keeping_size_and_mtime(dest / "model-00001.safetensors")  # on the host
    repaired = run_module(conn, "model_fetch", **upload)
    assert repaired.changed and repaired.data["to_send"] == ["model-00001.safetensors"], repaired.msg
    assert sha(dest / "model-00001.safetensors") == sha(src / "model-00001.safetensors")

    edit_keeping_size_and_mtime(src / "sub" / "tokenizer.model")  # on the controller
    resent = run_module(conn, "model_fetch", **upload)
    assert resent.changed and resent.data["to_send"] == ["sub/tokenizer.model"], resent.msg
    assert sha(dest / "sub" / "tokenizer.model") == sha(src / "sub" / "tokenizer.model")

    (dest / "config.json").chmod(0o600)  # only the ctime moves: hashed again, found right, recorded
    same = run_module(conn, "model_fetch", **upload)
    assert not same.changed and same.data["bytes_sent"] == 0, same.msg
    assert manifest(dest)["files"]["config.json"]["ctime_ns"] == (dest / "config.json").stat().st_ctime_ns


def test_include_selects_lfs_files_and_drop_git_dir(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    result = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest), include=["*.safetensors"], drop_git_dir=True)
    assert result.changed and not result.failed, result.msg
    assert not (dest / ".git").exists() and result.data["git_dir_dropped_bytes"] > 600 * 1024
    assert sha(dest / "model.safetensors") == lfs_repo["sha"]["model.safetensors"]
    assert "pytorch_model.bin" not in manifest(dest)["files"]  # left out on purpose: still a pointer
    assert sha(dest / "config.json") == lfs_repo["sha"]["config.json"]
    again = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest), include=["*.safetensors"], drop_git_dir=True)
    assert not again.changed and not again.failed, again.msg
    with open(dest / "model.safetensors", "r+b") as handle:  # no .git to repair from: cloned again beside it
        handle.truncate(5000)
    repaired = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(dest), include=["*.safetensors"], drop_git_dir=True)
    assert repaired.changed and not repaired.failed, repaired.msg
    assert repaired.data["meta"]["reset"] == ["model.safetensors"] and not (dest / ".git").exists()
    assert sha(dest / "model.safetensors") == lfs_repo["sha"]["model.safetensors"]
    assert "pytorch_model.bin" not in manifest(dest)["files"] and not list(tmp_path.glob(".tiny.glmops-fetch/clone"))


def test_verification_names_the_bad_files_and_the_fix(lfs_repo: dict, tmp_path: Path) -> None:
    from glmops.modules import _fetch_worker as worker

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 999\n")
    (folder / "b.bin").write_bytes(b"x" * 10)
    (folder / "c.bin").write_bytes(b"y" * 20)
    expected = {"a.bin": {"size": 999, "sha256": "1" * 64}, "b.bin": {"size": 20, "sha256": "2" * 64},
                "c.bin": {"size": 20, "sha256": "3" * 64}, "d.bin": {"size": 5}}
    with pytest.raises(worker.FetchError) as info:
        worker.verify(str(folder), expected)
    msg = info.value.msg
    assert "LFS pointer files instead of content: a.bin" in msg and "truncated: b.bin (10 of 20 bytes)" in msg
    assert "sha256 differs from the source: c.bin" in msg and "missing: d.bin" in msg and "run again" in msg


@pytest.mark.parametrize("repo", ["--upload-pack=touch {marker}", "-c core.sshCommand=touch {marker}"])
def test_option_like_repo_values_are_refused(conn: Any, tmp_path: Path, repo: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ArgumentError, match="must not start with '-'"):
        run_module(conn, "model_fetch", source="git", repo=repo.format(marker=marker), dest=str(tmp_path / "d"))
    assert not marker.exists()


@pytest.mark.parametrize("repo", ["$(touch {marker})", "x; touch {marker}", "`touch {marker}`", "file:///nope' ; touch {marker}; '"])
def test_hostile_repo_values_never_execute(conn: Any, tmp_path: Path, repo: str) -> None:
    marker = tmp_path / "pwned"
    result = run_module(conn, "model_fetch", source="git", repo=repo.format(marker=marker), dest=str(tmp_path / "d"))
    assert result.failed and "git clone" in result.msg
    assert not marker.exists()


def test_hostile_revision_is_refused(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="revision"):
        run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], revision="--output=/tmp/x", dest=str(tmp_path / "d"))


# -- upload ---------------------------------------------------------------------------------

def sftp_bytes_read(sshd: Any) -> int:
    """Bytes the server's sftp-server process read from the connection (what the client sent), from /proc."""
    total = 0
    for pid in sshd.sessions():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"sftp-server" not in cmdline:
                continue
            io_lines = Path(f"/proc/{pid}/io").read_text().splitlines()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in io_lines if line.startswith("rchar:")))
    return total


def make_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"a": 1}')
    (path / "model-00001.safetensors").write_bytes(os.urandom(4 * 1024 * 1024))
    (path / "sub" / "tokenizer.model").write_bytes(os.urandom(300 * 1024))
    return path


class Interrupt(Exception):
    pass


def test_upload_skips_complete_files_and_resumes_a_broken_one(sshd: Any, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    dest = tmp_path / "remote" / "model"
    big = 4 * 1024 * 1024
    module = get_module("model_fetch")
    args = validate_args(module, {"source": "upload", "src": str(src), "dest": str(dest)}, final=True)

    def stop_half_way(event: dict) -> None:
        if event["msg"] == "model-00001.safetensors" and event["done"] >= big // 2:
            raise Interrupt()

    first = open_connection("target", sshd.hostvars())
    first.connect()
    ctx = ModuleContext(conn=first, host="target", templar=Templar(), report=stop_half_way)
    ctx.PROGRESS_INTERVAL = 0  # type: ignore[misc]  # see every chunk
    with pytest.raises(Interrupt):
        module.run(ctx, args)
    first.close()
    parts = list(dest.glob(".model-00001.safetensors.glmops-part"))
    assert parts and big // 2 <= parts[0].stat().st_size < big
    kept = parts[0].stat().st_size

    second = open_connection("target", sshd.hostvars())
    second.connect()
    try:
        second._sftp_client()  # the SFTP server starts (and reads its libraries) before we count
        baseline = sftp_bytes_read(sshd)
        result = module.run(ModuleContext(conn=second, host="target", templar=Templar()), args)
        assert result.changed and not result.failed, result.msg
        read = sftp_bytes_read(sshd) - baseline
    finally:
        second.close()
    missing = big - kept + (300 * 1024 if "sub/tokenizer.model" in result.data["to_send"] else 0)
    assert result.data["bytes_sent"] == missing
    assert missing <= read <= missing * 1.01 + 16 * 1024  # SFTP packet overhead only, never the finished part again
    for rel in ("config.json", "model-00001.safetensors", "sub/tokenizer.model"):
        assert sha(dest / rel) == sha(src / rel)
    assert not list(dest.glob(".*glmops-part"))

    with open(dest / "sub" / "tokenizer.model", "r+b") as handle:  # truncated on the host
        handle.truncate(100)
    third = open_connection("target", sshd.hostvars())
    third.connect()
    try:
        repaired = run_module(third, "model_fetch", source="upload", src=str(src), dest=str(dest))
        assert repaired.changed and repaired.data["to_send"] == ["sub/tokenizer.model"]
        assert repaired.data["bytes_sent"] == 300 * 1024
        again = run_module(third, "model_fetch", source="upload", src=str(src), dest=str(dest))
        assert not again.changed and again.data["bytes_sent"] == 0
    finally:
        third.close()
    assert sha(dest / "sub" / "tokenizer.model") == sha(src / "sub" / "tokenizer.model")


def test_upload_check_mode_reports_files_and_bytes(conn: Any, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    result = run_module(conn, "model_fetch", check=True, source="upload", src=str(src), dest=str(tmp_path / "d"), include=["*.safetensors", "*.json"])
    assert result.changed and result.data["to_send"] == ["config.json", "model-00001.safetensors"]
    assert result.data["bytes_to_send"] == 4 * 1024 * 1024 + len('{"a": 1}')
    assert not (tmp_path / "d").exists()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs the test mounts and unmounts."""
    with tmpfs(tmp_path / "disk", "1m") as mount:
        yield mount


def test_disk_preflight_fails_with_the_numbers(conn: Any, lfs_repo: dict, tmp_path: Path, small_disk: Path) -> None:
    src = make_folder(tmp_path / "src")
    result = run_module(conn, "model_fetch", source="upload", src=str(src), dest=str(small_disk / "model"))
    assert result.failed and "not enough disk space at " + str(small_disk) in result.msg
    assert result.data["needed"] == 4 * 1024 * 1024 + 300 * 1024 + len('{"a": 1}') and result.data["free"] <= 1024 * 1024
    assert not (small_disk / "model").exists()
    fetched = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(small_disk / "tiny"))
    assert fetched.failed and "not enough disk space at" in fetched.msg and "need 1638400 bytes" in fetched.msg


def test_revision_change_checks_out_the_new_revision(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    src = lfs_repo["src"]
    first_commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True).stdout.strip()
    dest = tmp_path / "tiny"
    first = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], revision=first_commit, dest=str(dest))
    assert first.changed and first.data["meta"]["commit"] == first_commit, first.msg
    subprocess.run([*GIT, "checkout", "-q", "-b", "v2"], cwd=src, check=True)
    (src / "extra.bin").write_bytes(os.urandom(5000))
    subprocess.run([*GIT, "add", "extra.bin"], cwd=src, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "v2"], cwd=src, check=True)
    subprocess.run([*GIT, "push", "-q", "origin", "v2"], cwd=src, check=True)
    subprocess.run([*GIT, "checkout", "-q", "main"], cwd=src, check=True)
    second = run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], revision="v2", dest=str(dest))
    assert second.changed and not second.failed, second.msg
    assert "extra.bin" in manifest(dest)["files"] and manifest(dest)["revision"] == "v2"
    assert not run_module(conn, "model_fetch", source="git", repo=lfs_repo["url"], revision="v2", dest=str(dest)).changed


# -- hubs (the real clients against a loopback stand-in of each hub's file API) --------------

HUB_FILES = {"config.json": b'{"model_type": "tiny"}', "model.safetensors": os.urandom(700 * 1024),
             "pytorch_model.bin": os.urandom(100 * 1024), "tokenizer/tokenizer.model": os.urandom(3000)}


@pytest.mark.parametrize("source", ["huggingface", "modelscope"])
def test_hub_fetch_with_the_real_client_rerun_and_include(conn: Any, tmp_path: Path, source: str) -> None:
    import sys

    from hubserver import HubServer

    dest = tmp_path / "tiny"
    with HubServer("ZhipuAI/tiny", HUB_FILES) as hub:
        args = dict(source=source, repo="ZhipuAI/tiny", dest=str(dest), endpoint=hub.url, python=sys.executable, exclude=["*.bin"])
        result = run_module(conn, "model_fetch", **args)
        assert result.changed and not result.failed, result.msg
        assert sorted(manifest(dest)["files"]) == ["config.json", "model.safetensors", "tokenizer/tokenizer.model"]
        for name in manifest(dest)["files"]:
            assert (dest / name).read_bytes() == HUB_FILES[name]
        assert "pytorch_model.bin" not in hub.sent and hub.unknown == []
        again = run_module(conn, "model_fetch", **args)
        assert not again.changed and not again.failed, again.msg
        with open(dest / "model.safetensors", "r+b") as handle:  # a download cut short
            handle.truncate(100 * 1024)
        hub.sent.clear()
        repaired = run_module(conn, "model_fetch", **args)
        assert repaired.changed and not repaired.failed and repaired.data["changed_files"] == ["model.safetensors"], repaired.msg
        assert (dest / "model.safetensors").read_bytes() == HUB_FILES["model.safetensors"]
        assert set(hub.sent) <= {"model.safetensors"}  # the good files were not downloaded again


def test_hub_client_missing_in_the_target_python_is_reported_with_the_fix(conn: Any, tmp_path: Path) -> None:
    import venv

    env = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(env)
    python = str(env / "bin" / "python")
    check = run_module(conn, "model_fetch", check=True, source="modelscope", repo="ZhipuAI/tiny", dest=str(tmp_path / "m"), python=python,
                       endpoint="http://127.0.0.1:9")
    assert check.changed and "after installing modelscope into" in check.msg
    result = run_module(conn, "model_fetch", source="modelscope", repo="ZhipuAI/tiny", dest=str(tmp_path / "m"), python=python,
                        endpoint="http://127.0.0.1:9")
    assert result.failed and f"cannot install modelscope into {python}" in result.msg and "-m pip install modelscope" in result.msg


def test_download_goes_on_when_the_ssh_session_dies_and_the_next_run_attaches(sshd_factory: Any, tmp_path: Path) -> None:
    import sys
    import threading

    from hubserver import HubServer

    from glmops.modules.model_fetch import fetch_paths, state_dir

    server = sshd_factory()  # its own sshd: the test kills this one's sessions
    dest = tmp_path / "tiny"
    pid_file = Path(fetch_paths(state_dir(str(dest))).pid_file)
    module = get_module("model_fetch")
    with HubServer("ZhipuAI/tiny", HUB_FILES) as hub:
        hub.hold = "model.safetensors"
        args = validate_args(module, dict(source="huggingface", repo="ZhipuAI/tiny", dest=str(dest), endpoint=hub.url, python=sys.executable),
                             final=True)
        outcome: dict[str, Any] = {}

        def first_run() -> None:
            conn = open_connection("target", server.hostvars())
            try:
                outcome["result"] = module.run(ModuleContext(conn=conn, host="target", templar=Templar()), args)
            except Exception as exc:  # noqa: BLE001 - the connection is cut under it
                outcome["error"] = exc
            finally:
                conn.close()

        thread = threading.Thread(target=first_run)
        thread.start()
        try:
            assert hub.holding.wait(60), "the download never started"
            worker_pid = int(pid_file.read_text())
            server.stop()  # the SSH server and its sessions die (the detached fetch is not one of its processes)
            thread.join(60)
            assert not thread.is_alive()
            assert "run the task again to attach" in str(outcome["error"])
            os.kill(worker_pid, 0)  # the download goes on
            server.start()  # the host is reachable again

            polled = threading.Event()
            conn = open_connection("target", server.hostvars())
            conn.connect()
            try:
                ctx = ModuleContext(conn=conn, host="target", templar=Templar(), report=lambda event: polled.set())
                ctx.PROGRESS_INTERVAL = 0  # type: ignore[misc]
                second: dict[str, Any] = {}
                attach = threading.Thread(target=lambda: second.setdefault("result", module.run(ctx, args)))
                attach.start()
                assert polled.wait(60), "the second run did not follow the running download"
                hub.release.set()
                attach.join(120)
                result = second["result"]
            finally:
                conn.close()
        finally:
            hub.release.set()
            thread.join(60)
        assert result.changed and not result.failed, result.msg
        assert result.data["attached"] is True and result.data["pid"] == worker_pid
        assert (dest / "model.safetensors").read_bytes() == HUB_FILES["model.safetensors"]
        assert hub.requests.count("GET /ZhipuAI/tiny/resolve/" + "0123456789abcdef0123456789abcdef01234567/model.safetensors") == 1


def test_check_mode_reports_files_and_bytes_for_hubs_and_clones(conn: Any, lfs_repo: dict, tmp_path: Path) -> None:
    import sys

    from hubserver import HubServer

    with HubServer("ZhipuAI/tiny", HUB_FILES) as hub:
        result = run_module(conn, "model_fetch", check=True, source="huggingface", repo="ZhipuAI/tiny", dest=str(tmp_path / "hf"),
                            endpoint=hub.url, python=sys.executable, include=["*.safetensors", "*.json"])
        assert result.changed and result.data["to_fetch"] == ["config.json", "model.safetensors"]
        assert result.data["bytes_to_fetch"] == len(HUB_FILES["config.json"]) + len(HUB_FILES["model.safetensors"])
        assert not (tmp_path / "hf").exists() and hub.sent == {}
    dest = tmp_path / "tiny"
    subprocess.run(["git", "clone", "-q", lfs_repo["url"], str(dest)], env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"}, check=True)
    pointers = run_module(conn, "model_fetch", check=True, source="git", repo=lfs_repo["url"], dest=str(dest))
    assert pointers.data["to_fetch"] == ["model.safetensors", "pytorch_model.bin"] and pointers.data["bytes_to_fetch"] == 800 * 1024
    assert "would fetch 2 files (800.0 KiB)" in pointers.msg


def test_dest_under_home_and_relative_dest(conn: Any, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    home = conn.run('printf %s "$HOME"').stdout
    result = run_module(conn, "model_fetch", check=True, source="upload", src=str(src), dest="~/glmops-test-absent/model")
    assert result.changed and result.data["dest"] == f"{home}/glmops-test-absent/model"
    assert not Path(home, "glmops-test-absent").exists()
    relative = run_module(conn, "model_fetch", source="upload", src=str(src), dest="models/x")
    assert relative.failed and "dest must be an absolute path" in relative.msg


def test_git_and_upload_on_the_controller_itself(lfs_repo: dict, tmp_path: Path) -> None:
    from glmops.connection.local import LocalConnection

    local = LocalConnection()
    fetched = run_module(local, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(tmp_path / "git"), drop_git_dir=True)
    assert fetched.changed and not fetched.failed, fetched.msg
    assert sha(tmp_path / "git" / "model.safetensors") == lfs_repo["sha"]["model.safetensors"]
    src = make_folder(tmp_path / "src")
    uploaded = run_module(local, "model_fetch", source="upload", src=str(src), dest=str(tmp_path / "up"))
    assert uploaded.changed and uploaded.data["bytes_sent"] == 4 * 1024 * 1024 + 300 * 1024 + len('{"a": 1}')
    assert not run_module(local, "model_fetch", source="upload", src=str(src), dest=str(tmp_path / "up")).changed
    assert not run_module(local, "model_fetch", source="git", repo=lfs_repo["url"], dest=str(tmp_path / "git"), drop_git_dir=True).changed
