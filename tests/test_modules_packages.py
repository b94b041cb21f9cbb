"""git (with git-lfs over file://), pip into a virtualenv, apt with the real package manager."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from modhelp import run_module


GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A bare repo with an LFS-tracked 'weights' file, like a ModelScope model repo."""
    src = tmp_path / "src"
    src.mkdir()
    git("init", "-q", cwd=src)
    git("lfs", "track", "*.safetensors", cwd=src)
    (src / "config.json").write_text('{"model_type": "chatglm"}\n')
    (src / "model.safetensors").write_bytes(os.urandom(200_000))
    git("add", "-A", cwd=src)
    git("commit", "-qm", "v1", cwd=src)
    git("tag", "v1", cwd=src)
    bare = tmp_path / "repo.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    git("remote", "add", "origin", str(bare), cwd=src)
    git("-c", "lfs.concurrenttransfers=1", "push", "-q", "origin", "main", "--tags", cwd=src)
    return bare


def test_git_clone_update_version_and_lfs(conn, upstream: Path, tmp_path: Path) -> None:
    dest = tmp_path / "chatglm3-6b"
    url = f"file://{upstream}"
    checked = run_module(conn, "git", repo=url, dest=str(dest), check=True)
    assert checked.changed and not dest.exists()
    cloned = run_module(conn, "git", repo=url, dest=str(dest), lfs=True)
    assert cloned.changed and cloned.data["before"] is None and len(cloned.data["after"]) == 40
    weights = (dest / "model.safetensors").read_bytes()
    assert (upstream.parent / "src" / "model.safetensors").read_bytes() == weights  # real content, not a pointer
    assert not run_module(conn, "git", repo=url, dest=str(dest), lfs=True).changed
    src = upstream.parent / "src"
    (src / "config.json").write_text('{"model_type": "chatglm", "v": 2}\n')
    git("commit", "-qam", "v2", cwd=src)
    git("push", "-q", "origin", "main", cwd=src)
    updated = run_module(conn, "git", repo=url, dest=str(dest), lfs=True)
    assert updated.changed and updated.data["before"] != updated.data["after"]
    assert '"v": 2' in (dest / "config.json").read_text()
    pinned = run_module(conn, "git", repo=url, dest=str(dest), version="v1")
    assert pinned.changed and '"v"' not in (dest / "config.json").read_text()
    (dest / "config.json").write_text("local edit")
    dirty = run_module(conn, "git", repo=url, dest=str(dest), version="main")
    assert dirty.failed and "local modifications" in dirty.msg
    assert run_module(conn, "git", repo=url, dest=str(dest), version="main", force=True).changed


def test_git_lfs_pointer_files_are_fetched(conn, upstream: Path, tmp_path: Path) -> None:
    """The guides' smudge failure: a clone left with pointer files is repaired by lfs: true."""
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", f"file://{upstream}", str(dest)], env={**GIT_ENV, "GIT_LFS_SKIP_SMUDGE": "1"}, check=True)
    assert (dest / "model.safetensors").read_bytes().startswith(b"version https://git-lfs")
    repaired = run_module(conn, "git", repo=f"file://{upstream}", dest=str(dest), lfs=True)
    assert repaired.changed and not (dest / "model.safetensors").read_bytes().startswith(b"version https://git-lfs")
    assert not run_module(conn, "git", repo=f"file://{upstream}", dest=str(dest), lfs=True).changed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A tiny local package, built offline."""
    root = tmp_path_factory.mktemp("pkg")
    (root / "glmops_probe_pkg").mkdir()
    (root / "glmops_probe_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "pyproject.toml").write_text('[project]\nname = "glmops-probe-pkg"\nversion = "1.0"\n[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    out = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(root)], check=True)
    return out


def test_pip_into_new_virtualenv(conn, wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    extra = f"--no-index --find-links {wheel}"
    checked = run_module(conn, "pip", name=["glmops-probe-pkg==1.0"], virtualenv=str(venv), extra_args=extra, check=True)
    assert checked.changed and not venv.exists()
    installed = run_module(conn, "pip", name=["glmops-probe-pkg==1.0"], virtualenv=str(venv), extra_args=extra)
    assert installed.changed and installed.data["packages"] == ["glmops-probe-pkg==1.0"]
    assert subprocess.run([str(venv / "bin/python"), "-c", "import glmops_probe_pkg"]).returncode == 0
    assert not run_module(conn, "pip", name=["glmops-probe-pkg>=0.5"], virtualenv=str(venv), extra_args=extra).changed
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("glmops-probe-pkg==1.0\n")
    assert not run_module(conn, "pip", requirements=str(requirements), virtualenv=str(venv), extra_args=extra).changed
    assert run_module(conn, "pip", name=["glmops-probe-pkg"], virtualenv=str(venv), state="absent").changed
    assert not run_module(conn, "pip", name=["glmops-probe-pkg"], virtualenv=str(venv), state="absent").changed
    assert run_module(conn, "pip", requirements=str(requirements), virtualenv=str(venv), extra_args=extra).changed
    missing = run_module(conn, "pip", name=["glmops-no-such-pkg"], virtualenv=str(venv), extra_args=extra)
    assert missing.failed and "pip failed" in missing.msg


APT_PACKAGE = "sl"  # a tiny package that nothing else depends on


def test_apt_install_idempotent_and_remove(conn) -> None:
    run_module(conn, "apt", name=[APT_PACKAGE], state="absent")
    checked = run_module(conn, "apt", name=[APT_PACKAGE, "coreutils"], check=True)
    assert checked.changed and checked.data["packages"] == [APT_PACKAGE]
    assert subprocess.run(["dpkg", "-s", APT_PACKAGE], capture_output=True).returncode != 0
    installed = run_module(conn, "apt", name=[APT_PACKAGE, "coreutils"], update_cache=True, cache_valid_time=3600)
    assert installed.changed and installed.data["packages"] == [APT_PACKAGE], installed.msg
    assert not run_module(conn, "apt", name=[APT_PACKAGE], update_cache=True, cache_valid_time=3600).changed
    assert run_module(conn, "apt", name=[APT_PACKAGE], state="absent").changed
    assert not run_module(conn, "apt", name=[APT_PACKAGE], state="absent").changed
    failed = run_module(conn, "apt", name=["glmops-no-such-package"])
    assert failed.failed and "apt-get install failed" in failed.msg


def test_apt_waits_for_the_dpkg_lock(conn) -> None:
    lock_path = "/var/lib/dpkg/lock-frontend"
    held = threading.Event()

    def hold() -> None:
        with open(lock_path, "w") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX)
            held.set()
            time.sleep(2)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    started = time.monotonic()
    result = run_module(conn, "apt", name=[APT_PACKAGE])
    waited = time.monotonic() - started
    thread.join()
    assert not result.failed, result.msg
    assert waited >= 1.5
    run_module(conn, "apt", name=[APT_PACKAGE], state="absent")
