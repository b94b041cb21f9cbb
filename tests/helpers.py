"""Helpers for tests that run the real `glmops` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    """Write dedented text to path (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def glmops(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m glmops ARGS` and capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "glmops", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def inventory(path: Path, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]] | None = None, vars: dict[str, Any] | None = None) -> Path:
    """Write an Ansible YAML inventory."""
    data: dict[str, Any] = {"all": {"hosts": {} if groups else hosts}}
    if vars:
        data["all"]["vars"] = vars
    if groups:
        data["all"]["children"] = {g: {"hosts": {h: hosts[h] for h in members}} for g, members in groups.items()}
    path.write_text(yaml.safe_dump(data))
    return path


def events(output: str) -> list[dict[str, Any]]:
    """Parse --json output: every stdout line must be one JSON object."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def recap(output: str) -> dict[str, dict[str, int]]:
    """The recap stats of a --json run."""
    for event in events(output):
        if event["event"] == "recap":
            return event["stats"]
    raise AssertionError("no recap event in output:\n" + output)


def results(output: str, task: str) -> dict[str, dict[str, Any]]:
    """host -> host_result event of the task named `task` (last one wins)."""
    return {e["host"]: e for e in events(output) if e["event"] == "host_result" and e["task"] == task}


def run_playbook(tmp_path: Path, inv: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Write `playbook` to tmp_path/site.yml and `glmops run` it against `inv` with --json."""
    book = write(tmp_path / "site.yml", playbook)
    return glmops("run", str(book), "-i", str(inv), "--json", *args, cwd=tmp_path)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A small filesystem of its own at `mount` (a full disk on demand; the tests run as root, as CI does)."""
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def marked_processes(mark: str) -> list[int]:
    """Live (not zombie) processes whose environment holds `mark` (a task's `environment:` puts it there)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if mark.encode() in environ and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def interrupt_once_marked(argv: list[str], mark: str, *, env: dict[str, str], cwd: Path, timeout: float = 60,
                          grace: float = 0) -> tuple[int, str, str, list[int]]:
    """Start `argv`, send it one SIGINT (Ctrl-C) once a process carrying `mark` runs, and wait for it to end:
    (exit code, stdout, stderr, the marked processes still alive `grace` seconds after, which are then killed)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marked_processes(mark):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the marked command never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        deadline = time.monotonic() + grace
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = marked_processes(mark)
        for pid in survivors:  # never leave a failing run's command behind
            os.kill(pid, signal.SIGKILL)
    return proc.returncode, out, err, survivors
