"""LocalConnection (`connection: local`) beyond the contract shared with SSH (test_connection.py),
and how open_connection chooses between local and SSH."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from glmops.connection.base import Become
from glmops.connection.factory import open_connection
from glmops.connection.local import LocalConnection
from glmops.errors import GlmopsError


def _owner(path: Path) -> str:
    return subprocess.run(["stat", "-c", "%U", str(path)], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    ("name", "hostvars", "kind"),
    [
        ("localhost", {}, "LocalConnection"),
        ("127.0.0.1", {}, "LocalConnection"),
        ("box", {"ansible_connection": "local"}, "LocalConnection"),
        ("localhost", {"ansible_host": "127.0.0.1", "ansible_port": 2222}, "SSHConnection"),
        ("box", {}, "SSHConnection"),
        ("box", {"ansible_connection": "ssh", "ansible_host": "10.0.0.5"}, "SSHConnection"),
    ],
)
def test_factory_chooses_local_or_ssh(name: str, hostvars: dict, kind: str) -> None:
    connection = open_connection(name, hostvars)
    assert type(connection).__name__ == kind and connection.host == name


def test_factory_rejects_unknown_connection_types() -> None:
    with pytest.raises(GlmopsError, match="unsupported ansible_connection 'winrm'") as info:
        open_connection("box", {"ansible_connection": "winrm"})
    assert info.value.hint == "use ssh or local"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = f"sleep 31.{os.getpid()}"  # a command line no other process has
    started = time.monotonic()
    result = LocalConnection().run(f"echo begun; {marker} & {marker}; touch {tmp_path}/late", timeout=0.5)
    assert result.rc == 124 and time.monotonic() - started < 5
    assert result.stdout == "begun\n" and "timed out after 0.5 s" in result.stderr
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1  # nothing left running
    assert not (tmp_path / "late").exists()


def test_stdin_is_binary_exact_and_absent_stdin_does_not_block() -> None:
    payload = bytes(range(256)) * 1000
    local = LocalConnection()
    assert local.run("sha256sum", stdin=payload).stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    assert local.run("cat", timeout=5).stdout == ""


def test_become_another_user_runs_and_writes_as_that_user(world_dir: Path, tmp_path: Path) -> None:
    local = LocalConnection()
    nobody = Become("nobody")
    assert local.run("id -un", become=nobody).stdout == "nobody\n"
    assert local.run("id -un", become=Become(local.user)).stdout == f"{local.user}\n"  # no sudo needed
    local.put_bytes(b"\x00small", str(world_dir / "a"), mode=0o600, become=nobody)
    source = tmp_path / "src"
    source.write_bytes(os.urandom(300_000))
    seen: list[tuple[int, int]] = []
    local.put_file(str(source), str(world_dir / "b"), mode=0o640, become=nobody, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (300_000, 300_000)
    for name, content, mode in [("a", b"\x00small", 0o600), ("b", source.read_bytes(), 0o640)]:
        assert (world_dir / name).read_bytes() == content
        assert (world_dir / name).stat().st_mode & 0o777 == mode and _owner(world_dir / name) == "nobody"
    local.put_bytes(b"again", str(world_dir / "a"), become=nobody)  # mode None keeps 0600
    assert (world_dir / "a").stat().st_mode & 0o777 == 0o600
    local.get_file(str(world_dir / "a"), str(tmp_path / "back"), become=nobody)
    assert (tmp_path / "back").read_bytes() == b"again"
    world_dir.chmod(0o755)
    with pytest.raises(OSError, match="Permission denied"):
        local.put_bytes(b"x", str(world_dir / "c"), become=nobody)
    assert sorted(p.name for p in world_dir.iterdir()) == ["a", "b"]


def test_put_file_keeps_the_existing_mode_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    dest = tmp_path / "script.sh"
    dest.write_text("old")
    dest.chmod(0o755)
    source = tmp_path / "new.sh"
    source.write_text("#!/bin/sh\necho new\n")
    LocalConnection().put_file(str(source), str(dest))
    assert dest.read_text() == source.read_text() and dest.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.sh", "script.sh"]
