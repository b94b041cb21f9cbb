"""SSHConnection against a real OpenSSH server on 127.0.0.1: the protocol over one persistent shell,
files, become, host keys and connection failures. (The contract shared with LocalConnection is in
test_connection.py.)"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from glmops.connection.base import Become
from glmops.connection.factory import open_connection
from glmops.connection.ssh import SSHConnection
from glmops.errors import ConnectionFailure, GlmopsError, HostKeyError
from sshd import SshServer


def _accepted(server: SshServer) -> int:
    return Path(server.log).read_text(errors="replace").count("Accepted publickey")


def _shell_pid(connection: SSHConnection) -> str:
    return connection.run("echo $$").stdout  # in the command's subshell, $$ is still the long-lived sh


# -- the command protocol -------------------------------------------------------------------------
def test_large_and_binary_output_is_exact(conn) -> None:
    big = conn.run("head -c 5000000 /dev/zero | tr '\\0' y; head -c 1000000 /dev/zero | tr '\\0' e >&2; printf end")
    assert big.rc == 0 and len(big.stdout) == 5_000_003 and big.stdout.endswith("yend") and big.stderr == "e" * 1_000_000
    mixed = conn.run("printf '\\377ok\\n'; printf '中文' >&2; exit 42")
    assert (mixed.rc, mixed.stdout, mixed.stderr) == (42, "\ufffdok\n", "中文")
    assert conn.run("printf ''").stdout == ""  # no output at all
    assert conn.run("printf 'no newline'").stdout == "no newline"


def test_binary_and_large_stdin_reach_the_command_unchanged(conn) -> None:
    payload = bytes(range(256)) * 4096 + b"\n__glmops_fake_rc=0\nEOF\n"  # 1 MB, protocol-looking bytes included
    result = conn.run("sha256sum", stdin=payload)
    assert result.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    assert conn.run("cat", stdin=b"").stdout == ""
    assert conn.run("cat").stdout == ""  # no stdin: /dev/null, the command does not wait


def test_many_commands_share_one_login_and_one_shell(sshd_factory) -> None:
    server = sshd_factory()
    connection = open_connection("t", server.hostvars())
    connection.connect()
    pid = _shell_pid(connection)
    started = time.monotonic()
    for i in range(100):
        assert connection.run(f"echo {i}").stdout == f"{i}\n"
    elapsed = time.monotonic() - started
    assert _shell_pid(connection) == pid
    source = Path(server.state_dir) / "payload"
    source.write_bytes(b"x" * 1000)
    connection.put_file(str(source), str(source) + ".copy")
    connection.get_file(str(source) + ".copy", str(source) + ".back")
    connection.close()
    assert _accepted(server) == 1  # one SSH login for commands, uploads and downloads
    assert elapsed < 5, f"100 commands took {elapsed:.1f} s: the per-command cost should be a few ms"


def test_stray_background_output_neither_hangs_nor_leaks(conn) -> None:
    assert conn.run("(sleep 0.2; echo late; echo late-err >&2) &", timeout=10).rc == 0
    time.sleep(0.5)
    assert conn.run("echo next", timeout=10) == conn.run("echo next", timeout=10)
    result = conn.run("echo mine; (echo stray; echo stray-err >&2) &", timeout=10)
    assert result.rc == 0 and result.stdout.startswith("mine\n")
    time.sleep(0.2)
    after = conn.run("echo clean", timeout=10)
    assert (after.stdout, after.stderr) == ("clean\n", "")


def test_a_command_that_kills_the_shell_is_reported_and_the_shell_comes_back(conn) -> None:
    before = _shell_pid(conn)
    dead = conn.run("kill -9 $$")
    assert dead.rc != 0 and "shell ended" in dead.stderr
    assert conn.run("echo back").stdout == "back\n"
    assert _shell_pid(conn) != before


def test_timeout_kills_the_process_group_and_keeps_partial_output(conn, tmp_path: Path) -> None:
    before = _shell_pid(conn).strip()
    started = time.monotonic()
    result = conn.run(f"echo started; sleep 30 & sleep 30; touch {tmp_path}/late", timeout=0.5)
    assert result.rc == 124 and time.monotonic() - started < 5
    assert result.stdout == "started\n" and "timed out after 0.5 s" in result.stderr
    assert conn.run(f"pgrep -f 'sleep 30' -s {before} || echo none").stdout == "none\n"
    assert _shell_pid(conn).strip() != before
    assert not (tmp_path / "late").exists()


def test_hostile_paths_and_commands_stay_data(conn, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    for name in [f"a'; touch {sentinel}; '", f"$(touch {sentinel})", f"`touch {sentinel}`", "line\nbreak", "-rf x"]:
        dest = tmp_path / name.replace("/", "_")
        conn.put_bytes(b"data", str(dest))
        assert dest.read_bytes() == b"data"
        conn.get_file(str(dest), str(dest) + ".back")
        assert Path(str(dest) + ".back").read_bytes() == b"data"
    assert conn.run("printf '%s' \"$X\"", env={"X": "\n'; exit 9; '"}).stdout == "\n'; exit 9; '"
    assert not sentinel.exists()
    with pytest.raises(ValueError):
        conn.run("true", env={"A;touch x": "1"})


def test_connections_run_in_parallel_threads(sshd, sshd_factory) -> None:
    servers = [sshd, sshd_factory()]
    outputs: dict[int, list[str]] = {}

    def work(index: int, server: SshServer) -> None:
        connection = open_connection(f"h{index}", server.hostvars())
        connection.connect()
        outputs[index] = [connection.run(f"echo {index}-{i}").stdout for i in range(30)]
        connection.close()

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(servers * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outputs == {i: [f"{i}-{n}\n" for n in range(30)] for i in range(4)}


def test_close_is_idempotent_and_a_closed_connection_reconnects(sshd) -> None:
    connection = open_connection("t", sshd.hostvars())
    assert connection.run("echo lazy").stdout == "lazy\n"  # run() connects when needed
    connection.close()
    connection.close()
    assert connection.run("echo again").stdout == "again\n"
    connection.close()


# -- files ---------------------------------------------------------------------------------------
def test_put_bytes_and_put_file_keep_existing_mode_and_fail_clearly(conn, tmp_path: Path) -> None:
    dest = tmp_path / "conf"
    dest.write_text("old")
    dest.chmod(0o640)
    conn.put_bytes(b"new", str(dest))
    assert dest.read_bytes() == b"new" and dest.stat().st_mode & 0o777 == 0o640
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(700_000))  # above the size that goes through the shell
    conn.put_bytes(source.read_bytes(), str(dest), mode=0o755)
    assert dest.read_bytes() == source.read_bytes() and dest.stat().st_mode & 0o777 == 0o755
    conn.put_file(str(source), str(dest))
    assert dest.stat().st_mode & 0o777 == 0o755
    with pytest.raises(OSError, match="no-such-dir"):
        conn.put_bytes(b"x", str(tmp_path / "no-such-dir" / "f"))
    with pytest.raises(OSError, match="no-such-dir"):
        conn.put_file(str(source), str(tmp_path / "no-such-dir" / "f"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "src.bin"]


def test_put_file_reports_progress_and_resumes_only_a_matching_part(conn, tmp_path: Path) -> None:
    data = os.urandom(2_500_000)
    source = tmp_path / "weights.bin"
    source.write_bytes(data)
    dest = tmp_path / "out.bin"
    part = tmp_path / ".out.bin.glmops-part"
    seen: list[tuple[int, int]] = []
    conn.put_file(str(source), str(dest), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2_500_000, 2_500_000) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    part.write_bytes(data + b"longer than the source")  # cannot be a prefix: started over
    conn.put_file(str(source), str(dest))
    assert dest.read_bytes() == data and not part.exists()
    part.write_bytes(data)  # complete but never renamed (interrupted after the upload)
    seen.clear()
    conn.put_file(str(source), str(dest), mode=0o600, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2_500_000, 2_500_000)] and dest.read_bytes() == data and dest.stat().st_mode & 0o777 == 0o600


def _wait_for_size(path: Path, size: int) -> None:
    """Until the host has written `size` bytes of `path` (SFTP writes are pipelined; this is no timing assertion)."""
    deadline = time.monotonic() + 60
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        time.sleep(0.01)


@pytest.mark.parametrize("damage", ["truncate", "append"])
def test_put_file_refuses_a_part_changed_on_the_host_during_the_upload(conn, tmp_path: Path, damage: str) -> None:
    size = 3 * 1024 * 1024
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(size))
    dest, part = tmp_path / "out.bin", tmp_path / ".out.bin.glmops-part"

    def meddle(done: int, total: int) -> None:
        if damage == "truncate" and done == total:  # every byte has arrived, then half is lost
            _wait_for_size(part, size)
            os.truncate(part, size // 2)
        if damage == "append" and done == 1024 * 1024:  # another writer, mid-way
            _wait_for_size(part, 1)
            with open(part, "r+b") as handle:
                handle.seek(size + 10)
                handle.write(b"junk")

    with pytest.raises(OSError, match="failed verification \\(size mismatch: expected 3145728 bytes"):
        conn.put_file(str(source), str(dest), progress=meddle)
    assert not dest.exists() and not part.exists()  # nothing installed, the bad part removed
    conn.put_file(str(source), str(dest))  # a second run starts over and succeeds
    assert dest.read_bytes() == source.read_bytes()


def test_put_file_refuses_bytes_that_are_not_the_expected_sha256(conn, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    with pytest.raises(OSError, match="failed verification \\(checksum mismatch"):
        conn.put_file(str(source), str(tmp_path / "out.bin"), sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


# -- become ---------------------------------------------------------------------------------------
def test_become_runs_through_sudo_only_for_another_user(conn) -> None:
    assert conn.run("cat /proc/$PPID/comm", become=Become("nobody")).stdout == "sudo\n"
    assert conn.run("id -un", become=Become("nobody")).stdout == "nobody\n"
    as_root = conn.run("id -un; cat /proc/$PPID/comm", become=Become("root"))
    assert as_root.stdout.split("\n")[0] == "root" and "sudo" not in as_root.stdout


def test_become_files_are_written_by_the_become_user(conn, world_dir: Path, tmp_path: Path) -> None:
    nobody = Become("nobody")
    conn.put_bytes(b"small", str(world_dir / "a"), mode=0o600, become=nobody)
    source = tmp_path / "big"
    source.write_bytes(os.urandom(1_200_000))
    conn.put_file(str(source), str(world_dir / "b"), mode=0o640, become=nobody)
    for name, content, mode in [("a", b"small", 0o600), ("b", source.read_bytes(), 0o640)]:
        path = world_dir / name
        assert path.read_bytes() == content and path.stat().st_mode & 0o777 == mode
        assert subprocess.run(["stat", "-c", "%U", str(path)], capture_output=True, text=True).stdout.strip() == "nobody"
    conn.get_file(str(world_dir / "a"), str(tmp_path / "a.back"), become=nobody)
    assert (tmp_path / "a.back").read_bytes() == b"small"
    assert sorted(p.name for p in world_dir.iterdir()) == ["a", "b"]
    parts = [Path(os.path.expanduser("~")) / f".glmops-upload-{hashlib.sha256(str(world_dir / n).encode()).hexdigest()[:16]}.part" for n in "bc"]
    assert not parts[0].exists()  # the staged upload in the login user's home is gone
    world_dir.chmod(0o755)
    with pytest.raises(OSError, match="Permission denied"):
        conn.put_bytes(b"x", str(world_dir / "c"), become=nobody)
    with pytest.raises(OSError, match="Permission denied"):
        conn.put_file(str(source), str(world_dir / "c"), become=nobody)
    assert sorted(p.name for p in world_dir.iterdir()) == ["a", "b"] and not parts[1].exists()


# -- host keys ------------------------------------------------------------------------------------
def test_hashed_known_hosts_entries_are_recognised(sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    shutil.copyfile(sshd.known_hosts, known)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "127.0.0.1" not in known.read_text()
    with open_connection("t", {**sshd.hostvars(), "glmops_known_hosts": str(known)}) as connection:
        assert connection.run("echo ok").stdout == "ok\n"


def test_accept_new_creates_the_file_and_no_disables_checking(sshd, tmp_path: Path) -> None:
    known = tmp_path / "new-dir" / "known_hosts"
    hostvars = {**sshd.hostvars(), "glmops_known_hosts": str(known), "host_key_checking": "no"}
    with open_connection("t", hostvars):
        pass
    assert not known.exists()  # 'no' records nothing
    with open_connection("t", {**hostvars, "host_key_checking": "accept-new"}):
        pass
    assert known.stat().st_mode & 0o777 == 0o600 and len(known.read_text().splitlines()) == 1
    with open_connection("t", hostvars, host_key_checking="accept-new"):  # the argument wins
        pass
    assert len(known.read_text().splitlines()) == 1  # known now: not recorded twice
    with pytest.raises(GlmopsError, match="invalid host_key_checking"):
        open_connection("t", {**hostvars, "host_key_checking": "maybe"})


def test_unknown_key_message_tells_how_to_accept(sshd, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError) as info:
        open_connection("t", {**sshd.hostvars(), "glmops_known_hosts": str(tmp_path / "none")}).connect()
    assert "--accept-new-host-keys" in str(info.value) and "host_key_checking: accept-new" in str(info.value)


def test_parallel_accept_new_records_every_host(sshd, sshd_factory, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("# kept\n")
    servers = [sshd, sshd_factory(), sshd_factory()]
    errors: list[Exception] = []

    def connect(server: SshServer) -> None:
        try:
            with open_connection("t", {**server.hostvars(), "glmops_known_hosts": str(known)}, host_key_checking="accept-new"):
                pass
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=connect, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    text = known.read_text()
    assert text.startswith("# kept\n") and all(f"[127.0.0.1]:{s.port} ssh-ed25519" in text for s in servers)


class _TwoKeyServer(SshServer):
    """A server with an ECDSA host key besides the ed25519 one (as most real servers have)."""

    def start(self) -> "SshServer":
        os.makedirs(self.state_dir, exist_ok=True)
        self.ecdsa_key = os.path.join(self.state_dir, "host_ecdsa")
        if not os.path.exists(self.ecdsa_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", self.ecdsa_key], check=True)
        return super().start()

    def _config(self) -> str:
        return super()._config() + f"HostKey {self.ecdsa_key}\n"


def test_the_key_type_already_known_is_the_one_negotiated(tmp_path: Path) -> None:
    server = _TwoKeyServer(str(tmp_path / "two")).start()
    try:
        keytype, key = Path(server.ecdsa_key + ".pub").read_text().split()[:2]
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{server.port} {keytype} {key}\n")  # only the ECDSA key is known
        with open_connection("t", {**server.hostvars(), "glmops_known_hosts": str(known)}) as connection:
            assert connection.transport.get_remote_server_key().get_name() == keytype
    finally:
        server.stop()


# -- failures -------------------------------------------------------------------------------------
def test_failures_are_short_connection_failures(sshd, tmp_path: Path) -> None:
    with pytest.raises(ConnectionFailure, match="cannot resolve host name"):
        open_connection("t", {**sshd.hostvars(), "ansible_host": "no-such-host.invalid"}).connect()
    listener = socket.socket()  # accepts TCP but never speaks SSH
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionFailure) as info:
            open_connection("t", {**sshd.hostvars(), "ansible_port": listener.getsockname()[1]}, connect_timeout=1).connect()
        assert time.monotonic() - started < 5 and "Traceback" not in str(info.value)
    finally:
        listener.close()
    with pytest.raises(GlmopsError, match="ansible_port must be a number"):
        open_connection("t", {**sshd.hostvars(), "ansible_port": "ssh"})
    with pytest.raises(ConnectionFailure, match="authentication failed for nobody@"):
        open_connection("t", {**sshd.hostvars(), "ansible_user": "nobody"}).connect()


def test_stopping_the_test_server_ends_its_open_sessions(sshd_factory) -> None:
    server = sshd_factory()
    connection = open_connection("t", server.hostvars())
    shell = int(connection.run("echo $$").stdout)
    sessions = server.sessions()
    assert shell in sessions
    server.stop()
    server.stop()
    time.sleep(0.2)
    assert not [pid for pid in sessions if os.path.exists(f"/proc/{pid}") and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
    with pytest.raises(ConnectionFailure, match="connection refused"):
        for _ in range(2):  # the first call may still see only the shell's end
            connection.run("echo gone")
    connection.close()


@pytest.mark.parametrize("output", [b"", b"\n", b"a", b"a\n", b"a\n\nb", b"a\nb\n", b"\n\n", b"x" * 100 + b"\n" + b"y" * 3])
@pytest.mark.parametrize("chunk", [1, 2, 7, 1000])
def test_stream_lines_match_the_output_however_it_is_cut(output: bytes, chunk: int) -> None:
    from glmops.connection.base import LineSplitter
    from glmops.connection.ssh import _Stream

    lines: list[str] = []
    stream = _Stream(b"TOK_b\n", b"\nTOK_rc=", with_rc=True, lines=LineSplitter("stdout", lambda _s, line: lines.append(line)))
    wire = b"stray\nTOK_b\n" + output + b"\nTOK_rc=3\nafter"
    for at in range(0, len(wire), chunk):
        stream.feed(wire[at : at + chunk])
    assert stream.data == output and stream.rc == 3
    assert lines == output.decode().splitlines()
