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


@pytest.fixture
def conn(sshd: Any) -> Iterator[Any]:
    connection = open_connection("target", sshd.hostvars())
    connection.connect()
    yield connection
    connection.close()


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
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


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
