"""Transfers under hostile or unlucky conditions (issue 16, items 2, 5, 8, 10, 17), through the real
test sshd (and the controller itself where it has the same code path): a symlink planted at the
predictable part-file name, a symlinked destination, a login umask of 000, a disk that filled up
during an upload, Ctrl-C during a large upload, a hand edit that keeps size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, inventory, tmpfs, write
from modhelp import run_module
from sshd import SshServer

from glmops.connection.factory import open_connection
from glmops.connection.local import LocalConnection
from glmops.connection.ssh import SMALL_UPLOAD

MANIFEST = ".glmops-manifest.json"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside every destination that a planted symlink points at."""
    path = tmp_path / "outside" / "victim"
    path.parent.mkdir()
    path.write_bytes(b"precious\n")
    path.chmod(0o644)
    return path


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == b"precious\n", "the upload wrote through the planted symlink"


# -- item 2: a symlink planted at the part file's name ------------------------------------------

@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_model_fetch_upload_never_writes_through_a_planted_part_symlink(conn: Any, tmp_path: Path, victim: Path,
                                                                        dangling: bool) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    dest = tmp_path / "remote" / "model"
    dest.mkdir(parents=True)
    target = victim.parent / "created-through-link" if dangling else victim
    (dest / ".model.bin.glmops-part").symlink_to(target)

    result = run_module(conn, "model_fetch", source="upload", src=str(src), dest=str(dest))

    assert result.changed and not result.failed, result.msg
    assert_untouched(victim)
    assert not (victim.parent / "created-through-link").exists()
    installed = dest / "model.bin"
    assert not installed.is_symlink() and installed.is_file() and sha(installed) == sha(src / "model.bin")
    assert json.loads((dest / MANIFEST).read_text())["files"]["model.bin"]["sha256"] == sha(src / "model.bin")
    assert not list(dest.glob(".*glmops-part"))


def test_the_manifest_is_never_written_through_a_planted_symlink(conn: Any, tmp_path: Path, victim: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"a": 1}')
    dest = tmp_path / "remote" / "model"
    dest.mkdir(parents=True)
    (dest / (MANIFEST + ".glmops-tmp")).symlink_to(victim)
    result = run_module(conn, "model_fetch", source="upload", src=str(src), dest=str(dest))
    assert result.changed and not result.failed, result.msg
    assert_untouched(victim)
    assert not (dest / MANIFEST).is_symlink() and "config.json" in json.loads((dest / MANIFEST).read_text())["files"]


def test_copy_of_large_content_never_writes_through_a_planted_part_symlink(conn: Any, tmp_path: Path, victim: Path) -> None:
    dest = tmp_path / "etc" / "secret.conf"
    dest.parent.mkdir()
    (dest.parent / ".secret.conf.glmops-part").symlink_to(victim)
    content = "x" * (SMALL_UPLOAD + 1000)  # large enough for the SFTP upload with its part file

    result = run_module(conn, "copy", content=content, dest=str(dest), mode="0600")

    assert result.changed and not result.failed, result.msg
    assert_untouched(victim)
    assert not dest.is_symlink() and dest.read_text() == content and mode_of(dest) == 0o600


def test_a_part_that_became_a_symlink_is_never_installed(tmp_path: Path, victim: Path) -> None:
    """The last guard (partfile.finish_script, shared by the SFTP upload and get_url): a symlink is not a part."""
    from glmops.connection.partfile import finish_script

    part, dest = tmp_path / ".f.glmops-part", tmp_path / "f"
    part.symlink_to(victim)
    done = subprocess.run(["/bin/sh", "-c", finish_script(str(part), f"mv -f '{part}' '{dest}'")], capture_output=True, text=True)
    assert done.returncode != 0 and "not a regular file" in done.stderr
    assert not dest.exists() and not dest.is_symlink()


# -- item 5: a symlinked destination; temporary files are never wider than the final mode ----------

@pytest.mark.parametrize("size", [100, SMALL_UPLOAD + 1000], ids=["shell", "sftp"])
def test_put_onto_a_symlinked_dest_keeps_the_target_files_mode(any_conn: Any, tmp_path: Path, size: int) -> None:
    real = tmp_path / "real.conf"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = tmp_path / "app.conf"
    link.symlink_to(real)
    any_conn.put_bytes(b"n" * size, str(link))
    # the link is replaced by a regular file (as Ansible's copy without follow), with the mode of the file it pointed to
    assert not link.is_symlink() and link.read_bytes() == b"n" * size
    assert mode_of(link) == 0o600
    assert real.read_bytes() == b"old" and mode_of(real) == 0o600


@pytest.mark.parametrize("module", ["copy", "template"])
def test_copy_and_template_onto_a_symlink_to_a_0600_file_never_leave_0777(conn: Any, tmp_path: Path, module: str) -> None:
    real = tmp_path / "secret.env"
    real.write_text("TOKEN=old\n")
    real.chmod(0o600)
    dest = tmp_path / "app.env"
    dest.symlink_to(real)
    if module == "copy":
        result = run_module(conn, "copy", content="TOKEN=new\n", dest=str(dest))
    else:
        template = write(tmp_path / "app.env.j2", "TOKEN={{ token }}\n")
        result = run_module(conn, "template", src=str(template), dest=str(dest), variables={"token": "new"})
    assert result.changed and not result.failed, result.msg
    assert dest.read_text() == "TOKEN=new\n" and mode_of(dest) == 0o600
    again = run_module(conn, "copy", content="TOKEN=new\n", dest=str(dest))
    assert not again.changed and mode_of(dest) == 0o600


def test_local_become_onto_a_symlinked_dest_keeps_the_target_files_mode(world_dir: Path) -> None:
    from glmops.connection.base import Become

    real = world_dir / "real.conf"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = world_dir / "app.conf"
    link.symlink_to(real)
    for path in (real, link):
        os.chown(path, 65534, 65534, follow_symlinks=False)  # nobody's, so nobody may replace them
    LocalConnection().put_bytes(b"new", str(link), become=Become(user="nobody"))
    assert not link.is_symlink() and link.read_bytes() == b"new" and mode_of(link) == 0o600


class Umask0Sshd(SshServer):
    """A test sshd whose sessions (the login shell and sftp-server) run with umask 000 (sshd itself
    forces at least 022, so the forced command sets it before running what the client asked for)."""

    def _config(self) -> str:
        return super()._config() + 'ForceCommand umask 000; eval "$SSH_ORIGINAL_COMMAND"\n'


@pytest.fixture(scope="module")
def umask0_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = Umask0Sshd(str(tmp_path_factory.mktemp("sshd-umask0"))).start()
    yield server
    server.stop()


@pytest.fixture
def umask0_conn(umask0_sshd: Any) -> Iterator[Any]:
    connection = open_connection("target", umask0_sshd.hostvars())
    connection.connect()
    assert connection.run("umask").stdout.strip() in ("0000", "000"), "the test sshd does not pass its umask on"
    yield connection
    connection.close()


class Stop(Exception):
    pass


def test_a_part_file_is_private_even_under_a_login_umask_of_000(umask0_conn: Any, tmp_path: Path) -> None:
    source = tmp_path / "secret.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    dest = tmp_path / "remote" / "secret.bin"
    dest.parent.mkdir()

    def stop(done: int, _total: int) -> None:
        if done >= 1024 * 1024:
            raise Stop()

    with pytest.raises(Stop):
        umask0_conn.put_file(str(source), str(dest), mode=0o600, progress=stop)
    part = dest.parent / ".secret.bin.glmops-part"
    assert part.stat().st_size >= 1024 * 1024 and mode_of(part) == 0o600  # sftp-server alone would make it 0666
    umask0_conn.put_file(str(source), str(dest), mode=0o600)
    assert sha(dest) == sha(source) and mode_of(dest) == 0o600
    fresh = dest.parent / "fresh.txt"  # no mode, no file there: the login umask decides, as a plain `>` would
    umask0_conn.put_bytes(b"hello", str(fresh))
    assert mode_of(fresh) == 0o666


def test_a_temporary_file_is_never_seen_wider_than_its_final_mode(umask0_conn: Any, tmp_path: Path) -> None:
    dest = tmp_path / "remote" / "token"
    dest.parent.mkdir()
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(dest.parent):
                if ".glmops-" in entry.name:
                    try:
                        seen.append(stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
                    except FileNotFoundError:
                        pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round_ in range(500):  # until the watcher caught temporary files often enough
            umask0_conn.put_bytes(os.urandom(400 * 1024) + bytes([round_ % 256]), str(dest), mode=0o600)
            if len(seen) >= 50:
                break
    finally:
        done.set()
        watcher.join()
    assert seen, "the watcher never saw a temporary file (the test cannot tell anything)"
    assert set(seen) <= {0o600}, f"temporary files were seen with modes {sorted({oct(m) for m in seen})}"
    assert mode_of(dest) == 0o600


# -- item 8: the disk filled up during an upload; the resume needs only the rest -------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs the test mounts and unmounts (the tests run as root, as CI does)."""
    with tmpfs(tmp_path / "disk", "8m") as mount:
        yield mount


def fill(path: Path) -> None:
    """Write into `path` until the filesystem is full."""
    with open(path, "ab") as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        except OSError:
            pass


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_after_a_disk_full_upload_the_resume_needs_only_the_rest(sshd: Any, tmp_path: Path, small_disk: Path) -> None:
    from glmops.modules import get_module
    from glmops.modules.base import ModuleContext, validate_args
    from glmops.playbook.templating import Templar

    src = tmp_path / "src"
    src.mkdir()
    size = 6 * 1024 * 1024
    (src / "model.bin").write_bytes(os.urandom(size))
    dest = small_disk / "model"
    filler = small_disk / "other-files"
    module = get_module("model_fetch")
    args = validate_args(module, {"source": "upload", "src": str(src), "dest": str(dest)}, final=True)

    part = dest / ".model.bin.glmops-part"

    def fill_the_disk(event: dict) -> None:  # something else fills the disk while the upload runs
        if event.get("done", 0) >= 3 * 1024 * 1024 and not filler.exists():
            deadline = time.monotonic() + 30
            while part.stat().st_size < 2 * 1024 * 1024 and time.monotonic() < deadline:  # the sent bytes land
                time.sleep(0.01)
            fill(filler)

    first = open_connection("target", sshd.hostvars())
    first.connect()
    try:
        ctx = ModuleContext(conn=first, host="target", templar=Templar(), report=fill_the_disk)
        ctx.PROGRESS_INTERVAL = 0  # type: ignore[misc]  # see every chunk
        broken = module.run(ctx, args)
    finally:
        first.close()
    assert broken.failed and "No space left" in broken.msg, broken.msg
    kept = part.stat().st_size
    assert 2 * 1024 * 1024 <= kept < size

    with open(filler, "r+b") as handle:  # space is freed, but less than the whole file needs
        handle.truncate(max(0, filler.stat().st_size - (size - kept) + 256 * 1024))
    assert free_bytes(small_disk) < size - kept
    refused = run_module_on(sshd, "model_fetch", source="upload", src=str(src), dest=str(dest))
    assert refused.failed and str(part) in refused.msg, refused.msg  # the message names the kept part
    assert refused.data["needed"] == size - kept and f"less {kept} bytes already in part files that resume" in refused.msg

    with open(filler, "r+b") as handle:  # now the rest fits; the whole file still would not
        handle.truncate(max(0, filler.stat().st_size - 384 * 1024))
    assert size - kept < free_bytes(small_disk) < size
    resumed = run_module_on(sshd, "model_fetch", source="upload", src=str(src), dest=str(dest))
    assert resumed.changed and not resumed.failed, resumed.msg
    assert resumed.data["bytes_sent"] == size - kept
    assert sha(dest / "model.bin") == sha(src / "model.bin") and not part.exists()


def run_module_on(sshd: Any, name: str, **args: Any) -> Any:
    """One module call on a fresh connection to `sshd`."""
    connection = open_connection("target", sshd.hostvars())
    connection.connect()
    try:
        return run_module(connection, name, **args)
    finally:
        connection.close()


# -- item 10: Ctrl-C during a large upload stops the transfer loop; the part stays resumable -------

def test_ctrl_c_stops_a_large_upload_at_once_and_the_part_resumes(sshd: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 800 * 1024 * 1024  # seconds to send here, far more on a loaded machine
    with open(src / "big.bin", "wb") as handle:
        handle.write(os.urandom(1024 * 1024))
        handle.truncate(size)  # the rest is a hole: no disk used on the controller
    dest = tmp_path / "remote" / "model"
    part = dest / ".big.bin.glmops-part"
    inv = inventory(tmp_path / "hosts.yml", {"target": sshd.hostvars()})
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - model_fetch: {{source: upload, src: "{src}", dest: "{dest}"}}
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "glmops", "run", str(book), "-i", str(inv)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not part.exists() or part.stat().st_size < 40 * 1024 * 1024:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the upload never got going"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        sent_at = time.monotonic()
        out, err = proc.communicate(timeout=120)
        stopped_after = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 99, out + err
    kept = part.stat().st_size
    assert kept < size // 2, f"the upload went on after Ctrl-C: {kept} of {size} bytes sent"
    assert stopped_after < 5, f"glmops took {stopped_after:.1f} s to stop after Ctrl-C"
    assert not (dest / "big.bin").exists()

    resumed = run_module_on(sshd, "model_fetch", source="upload", src=str(src), dest=str(dest))
    assert resumed.changed and not resumed.failed, resumed.msg
    assert resumed.data["bytes_sent"] == size - kept  # the part was kept, not sent again
    assert (dest / "big.bin").stat().st_size == size and not part.exists()


@pytest.mark.parametrize("mode", [None, "0600"])
def test_copy_remote_src_never_writes_through_a_planted_temporary_name(conn: Any, tmp_path: Path, victim: Path,
                                                                         mode: str | None) -> None:
    src = tmp_path / "host" / "run.sh"
    src.parent.mkdir()
    src.write_text("#!/bin/sh\necho hi\n")
    src.chmod(0o750)
    dest = tmp_path / "opt" / "run.sh"
    dest.parent.mkdir()
    (dest.parent / "run.sh.glmops-tmp").symlink_to(victim)  # the temporary name older versions used
    args = {"mode": mode} if mode else {}

    result = run_module(conn, "copy", src=str(src), dest=str(dest), remote_src=True, **args)

    assert result.changed and not result.failed, result.msg
    assert_untouched(victim)
    assert not dest.is_symlink() and dest.read_text() == src.read_text()
    umask = int(conn.run("umask").stdout.strip(), 8)
    assert mode_of(dest) == (0o600 if mode else 0o750 & ~umask)  # without mode: what cp gives a new file
    assert not [p.name for p in dest.parent.iterdir() if ".glmops-tmp-" in p.name]
