"""The connection contract, on the real SSH transport and on the local one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from glmops.connection.base import Become
from glmops.connection.factory import open_connection
from glmops.connection.ssh import SSHConnection
from glmops.errors import ConnectionFailure, HostKeyError



def test_output_and_exit_codes_are_exact(any_conn) -> None:
    result = any_conn.run("printf 'out'; printf 'err\\n' >&2; exit 7")
    assert (result.rc, result.stdout, result.stderr) == (7, "out", "err\n")
    big = any_conn.run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert big.rc == 0 and len(big.stdout) == 3_000_000
    assert any_conn.run("printf '你好'").stdout == "你好"


def test_stdin_env_cwd(any_conn, tmp_path: Path) -> None:
    assert any_conn.run("cat", stdin=b"line1\nline2").stdout == "line1\nline2"
    assert any_conn.run('printf %s "$A"', env={"A": "x y"}).stdout == "x y"
    assert any_conn.run("pwd", cwd=str(tmp_path)).stdout.strip() == str(tmp_path)


def test_a_broken_command_does_not_break_the_next(any_conn) -> None:
    assert any_conn.run("echo 'unterminated").rc != 0
    assert any_conn.run("exit 3").rc == 3
    assert any_conn.run("exec true").rc == 0
    assert any_conn.run("echo fine").stdout == "fine\n"


def test_hostile_strings_stay_data(any_conn, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for value in [f'"; touch {sentinel} #', f"$(touch {sentinel})", f"`touch {sentinel}`", "a'b\"c\nd"]:
        result = any_conn.run('printf %s "$V"', env={"V": value})
        assert result.stdout == value
        weird = tmp_path / value.replace("/", "_")
        weird.mkdir(exist_ok=True)
        assert any_conn.run("pwd", cwd=str(weird)).stdout.strip() == str(weird)
    assert not sentinel.exists()


def test_timeout_kills_and_recovers(any_conn, tmp_path: Path) -> None:
    started = time.monotonic()
    result = any_conn.run(f"sleep 30; touch {tmp_path}/late", timeout=0.5)
    assert result.rc == 124 and time.monotonic() - started < 5
    assert any_conn.run("echo next").stdout == "next\n"
    time.sleep(0.3)
    assert not (tmp_path / "late").exists()


def test_on_line_streams_lines_while_the_command_runs(any_conn, tmp_path: Path) -> None:
    # The command waits for a file that only the callback of its first line creates: it can end
    # only if that line arrived while it was still running (else it times out with rc 124).
    flag = tmp_path / "seen-first"
    seen: list[tuple[str, str]] = []

    def on_line(stream: str, line: str) -> None:
        seen.append((stream, line))
        if line == "first":
            flag.touch()

    script = f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo 'to err' >&2; printf 'sec\\nond'; printf 'no newline'"
    result = any_conn.run(script, timeout=30, on_line=on_line)
    assert result.rc == 0 and result.stdout == "first\nsec\nondno newline" and result.stderr == "to err\n"
    assert [line for stream, line in seen if stream == "stdout"] == ["first", "sec", "ondno newline"]
    assert [line for stream, line in seen if stream == "stderr"] == ["to err"]


def test_on_line_gets_the_output_of_a_command_that_timed_out(any_conn) -> None:
    seen: list[str] = []
    result = any_conn.run("echo started; printf half; sleep 30", timeout=0.5, on_line=lambda stream, line: seen.append(line))
    assert result.rc == 124 and result.stdout == "started\nhalf" and seen == ["started", "half"]
    assert any_conn.run("echo next", on_line=lambda *_: None).stdout == "next\n"


def test_put_get_atomic_with_mode(any_conn, tmp_path: Path) -> None:
    dest = tmp_path / "f.txt"
    any_conn.put_bytes(b"one", str(dest), mode=0o600)
    assert dest.read_bytes() == b"one" and oct(dest.stat().st_mode & 0o777) == "0o600"
    any_conn.put_bytes(b"two", str(dest))
    assert dest.read_bytes() == b"two" and oct(dest.stat().st_mode & 0o777) == "0o600"  # mode kept
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2_000_000))
    any_conn.put_file(str(source), str(tmp_path / "copy.bin"), mode=0o644)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    any_conn.get_file(str(tmp_path / "copy.bin"), str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert not [p for p in tmp_path.iterdir() if "glmops" in p.name]


def test_one_transport_and_one_shell_for_many_commands(sshd) -> None:
    conn = open_connection("target", sshd.hostvars())
    conn.connect()
    pids = {conn.run("echo $PPID").stdout for _ in range(20)}
    assert len(pids) == 1  # every command ran under the same remote shell
    assert isinstance(conn, SSHConnection) and conn.transport is not None
    conn.close()


def test_upload_resumes_from_a_partial_part_file(sshd, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    data = os.urandom(3_000_000)
    source.write_bytes(data)
    dest = tmp_path / "remote.bin"
    part = tmp_path / ".remote.bin.glmops-part"
    part.write_bytes(data[:1_000_000])  # an earlier run broke off here
    progress: list[int] = []
    conn = open_connection("target", sshd.hostvars())
    conn.put_file(str(source), str(dest), progress=lambda done, total: progress.append(done))
    conn.close()
    assert dest.read_bytes() == data and not part.exists()
    assert progress[0] == 1_000_000 and progress[1] > 1_000_000  # starts where the part ends: not sent again
    part.write_bytes(b"garbage" * 1000)  # a part that does not match is started over
    conn = open_connection("target", sshd.hostvars())
    conn.put_file(str(source), str(dest))
    conn.close()
    assert dest.read_bytes() == data


def test_become_another_user(sshd, tmp_path: Path) -> None:
    conn = open_connection("target", sshd.hostvars())
    assert conn.run("id -un", become=Become("root")).stdout.strip() == "root"  # already root: no sudo
    result = conn.run("id -un", become=Become("nobody"))
    assert result.rc == 0 and result.stdout.strip() == "nobody"
    conn.close()


def test_unknown_changed_and_accepted_host_keys(sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    hostvars = {**sshd.hostvars(), "glmops_known_hosts": str(known)}
    with pytest.raises(HostKeyError, match="unknown host key"):
        open_connection("t", hostvars).connect()
    conn = open_connection("t", hostvars, host_key_checking="accept-new")
    conn.connect()
    conn.close()
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in known.read_text()
    open_connection("t", hostvars).connect()  # now known
    other_key = Path(sshd.state_dir) / "client_ed25519.pub"
    known.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(other_key.read_text().split()[:2]) + "\n")
    with pytest.raises(HostKeyError) as info:
        open_connection("t", hostvars, host_key_checking="accept-new").connect()
    assert "HOST KEY CHANGED" in str(info.value) and f"{known}:1" in str(info.value) and "ssh-keygen -R" in str(info.value)


def test_unreachable_and_auth_failures_are_clear(sshd, unreachable_hostvars, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionFailure, match="connection refused"):
        open_connection("t", unreachable_hostvars).connect()
    assert time.monotonic() - started < 3
    wrong_key = tmp_path / "wrong"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {wrong_key}")
    with pytest.raises(ConnectionFailure, match="authentication failed"):
        open_connection("t", {**sshd.hostvars(), "ansible_ssh_private_key_file": str(wrong_key)}).connect()
    with pytest.raises(ConnectionFailure, match="private key file not found"):
        open_connection("t", {**sshd.hostvars(), "ansible_ssh_private_key_file": str(tmp_path / "nokey")}).connect()
