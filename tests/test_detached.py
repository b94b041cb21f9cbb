"""The detached-process helper over the real sshd: own session, log, pid/exit-code files, status that
survives pid reuse, stop with TERM then KILL, and the persistent shell's timeout kill sparing it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glmops.modules import _detached
from glmops.modules._detached import Paths, build_script, parse_duration, parse_status




@pytest.fixture
def paths(tmp_path: Path):
    made = Paths(str(tmp_path / "run" / "job.pid"), str(tmp_path / "logs" / "job.log"))
    yield made
    pid_file = Path(made.pid_file)
    if pid_file.exists():  # never leave a process behind, whatever the test did
        try:
            os.killpg(int(pid_file.read_text().split()[0]), 9)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def _session_and_group(pid: int) -> tuple[int, int]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), int(fields[2])  # session, process group


def test_start_runs_in_its_own_session_with_log_and_files(conn, paths: Paths) -> None:
    shell_pid = int(conn.run("echo $$").stdout)
    script = build_script("echo started; echo \"$GREETING from $(pwd)\" >&2; exec sleep 300", chdir="/tmp",
                          environment={"GREETING": "it's me"})
    status = _detached.start(conn, paths, script, wait=0.3)
    assert status.running and status.pid and status.exit_code is None and status.script == script
    session, group = _session_and_group(status.pid)
    assert session == status.pid and group == status.pid  # its own session and process group
    assert group != shell_pid and session != _session_and_group(shell_pid)[0]
    assert oct(os.stat(paths.cmd_file).st_mode & 0o777) == "0o600"  # may hold secrets
    assert Path(paths.pid_file).read_text().strip() == str(status.pid)
    # stdin is /dev/null; stdout and stderr went to the log, not to the channel
    assert os.readlink(f"/proc/{status.pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{status.pid}/fd/1") == paths.log_file == os.readlink(f"/proc/{status.pid}/fd/2")
    assert conn.run("echo next").stdout == "next\n"  # the shell is not held by the daemon
    log = _detached.tail(conn, paths.log_file, 5)
    assert "started" in log and "it's me from /tmp" in log
    again = _detached.status(conn, paths)
    assert again.running and again.pid == status.pid and again.uptime_s is not None and again.uptime_s >= 0
    stopped = _detached.stop(conn, paths, grace=5)
    assert stopped.was_running and not stopped.killed and not stopped.status.running
    assert stopped.status.exit_code == 143  # ended by SIGTERM, recorded by the wrapper
    assert not Path(f"/proc/{status.pid}").exists() or "Z" in Path(f"/proc/{status.pid}/stat").read_text().split(") ")[1][:1]


def test_a_timeout_kill_of_the_shell_does_not_reach_the_daemon(any_conn, paths: Paths) -> None:
    conn = any_conn  # over SSH: the persistent shell's group is killed; locally: the command's group
    status = _detached.start(conn, paths, build_script("exec sleep 300"), wait=0)
    assert status.running
    timed_out = conn.run("sleep 30", timeout=0.5)
    assert timed_out.rc != 0
    assert _detached.status(conn, paths).running  # still running afterwards
    assert _session_and_group(status.pid)[0] == status.pid
    assert _detached.stop(conn, paths, grace=5).was_running


def test_exit_code_of_a_process_that_ends(conn, paths: Paths) -> None:
    status = _detached.start(conn, paths, build_script("echo about to fail; exit 3"), wait=5)
    assert not status.running and status.exit_code == 3
    assert "about to fail" in _detached.tail(conn, paths.log_file)
    missing = _detached.start(conn, paths, build_script("/nonexistent/program --flag"), wait=5)
    assert not missing.running and missing.exit_code == 127
    assert "nonexistent" in _detached.tail(conn, paths.log_file, 1)
    # a second start appends to the log rather than truncating it
    assert "about to fail" in _detached.tail(conn, paths.log_file, 10)
    assert not _detached.stop(conn, paths).was_running


def test_a_reused_pid_is_not_taken_for_the_daemon(conn, paths: Paths) -> None:
    status = _detached.start(conn, paths, build_script("exec sleep 300"), wait=0)
    assert _detached.stop(conn, paths, grace=5).was_running
    other = conn.run("sleep 300 > /dev/null 2>&1 < /dev/null & echo $!").stdout.strip()
    try:
        Path(paths.pid_file).write_text(other + "\n")  # as if the kernel gave the pid to another process
        seen = _detached.status(conn, paths)
        assert seen.pid == int(other) and not seen.running
        assert not _detached.stop(conn, paths, grace=1).was_running
        assert Path(f"/proc/{other}").exists()  # left alone
    finally:
        os.kill(int(other), 9)
    assert status.pid != int(other)


def test_stop_kills_what_ignores_term(conn, paths: Paths) -> None:
    script = build_script("trap '' TERM; echo ready; while :; do sleep 0.1; done")
    status = _detached.start(conn, paths, script, wait=0.3)
    assert status.running
    stopped = _detached.stop(conn, paths, grace=0.5)
    assert stopped.was_running and stopped.killed and not stopped.status.running


def test_status_of_nothing(conn, paths: Paths) -> None:
    status = _detached.status(conn, paths)
    assert (status.running, status.pid, status.exit_code, status.script) == (False, None, None, None)
    assert _detached.tail(conn, paths.log_file) == ""


@pytest.mark.parametrize(("text", "seconds"), [("42", 42), ("01:02", 62), ("1:00:00", 3600), ("2-00:00:01", 172801),
                                                ("", None), ("abc", None)])
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_parse_status_and_build_script() -> None:
    assert parse_status("pid=12\nrunning=1\nuptime=5\nrc=0\n@@script\nx\n").as_dict() == {
        "running": True, "pid": 12, "exit_code": None, "uptime_s": 5}
    assert parse_status("pid=12\nrunning=0\nrc=1\n@@script\n").exit_code == 1
    assert build_script("run it", chdir="/a b", environment={"K": "v'1"}) == "cd '/a b' || exit 1\nexport K='v'\"'\"'1'\nrun it\n"
    with pytest.raises(ValueError):
        build_script("x", environment={"1BAD": "v"})


def test_without_setsid_perl_starts_the_session(paths: Paths, tmp_path: Path) -> None:
    """macOS has no setsid(1): the same start through perl's POSIX::setsid."""
    from glmops.connection.local import LocalConnection

    bin_dir = tmp_path / "bin-without-setsid"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name != "setsid" and not (bin_dir / name).exists():
                    (bin_dir / name).symlink_to(os.path.join(folder, name))
    conn = LocalConnection()

    class NoSetsid:
        def run(self, cmd: str, **kwargs):
            return conn.run(cmd, env={"PATH": str(bin_dir)}, **kwargs)

    runner = NoSetsid()
    assert runner.run("command -v setsid || echo none").stdout.strip() == "none"
    status = _detached.start(runner, paths, build_script("umask; exec sleep 300"), wait=0.3)  # the .cmd file is written under umask 077
    assert status.running and _session_and_group(status.pid) == (status.pid, status.pid)
    assert _detached.tail(runner, paths.log_file).strip() == runner.run("umask").stdout.strip()  # the caller's umask, kept
    assert _detached.stop(runner, paths, grace=5).was_running
