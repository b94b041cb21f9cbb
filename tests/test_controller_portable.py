"""The controller on any laptop (issue 18, item 4): every command of the controller side runs with the
POSIX-only parts of Python taken away, as on Windows: a sitecustomize in each glmops process makes
`import fcntl`, `termios`, `pwd`, `grp`, `resource`, `tty`, `pty` fail and deletes os.setsid,
os.killpg, os.getpgid, os.fork, os.getuid and the signals Windows lacks (SIGKILL, SIGHUP, ...).
What must work there, and is asserted: importing every controller module; `--help` of every command;
`inventory add` / `list`; `glmops run` of a playbook over SSH (twice: changed=0) and its Ctrl-C;
`tunnel` in the background with `status` and `stop`; the day-2 `facts` over SSH. `connection: local`
(commands run with /bin/sh, stopped by process group) is refused there with a clear error: on native
Windows the controller's own plays need WSL.
The server (glmops/server) and the scripts that run on the target are Linux-only and not in this set.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import click
import pytest
import yaml
from helpers import ROOT, events, interrupt_once_marked, recap, write
from httpserver import LoopbackHTTPServer
from sshd import free_port

import glmops

BLOCKED_MODULES = ("fcntl", "termios", "pwd", "grp", "resource", "tty", "pty")
BLOCKED_OS = ("setsid", "killpg", "getpgid", "getpgrp", "setpgrp", "fork", "getuid", "geteuid")
BLOCKED_SIGNALS = ("SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGPIPE", "SIGALRM", "SIGTSTP", "SIGSTOP", "SIGCONT")
SHIM = f"""import os, signal, sys
for name in {BLOCKED_MODULES!r}:
    sys.modules[name] = None  # `import name` raises ImportError
for name in {BLOCKED_OS!r}:
    if hasattr(os, name):
        delattr(os, name)
for name in {BLOCKED_SIGNALS!r}:
    if hasattr(signal, name):
        delattr(signal, name)
"""
# The server runs on Linux targets; __main__ runs the CLI when imported.
NOT_CONTROLLER = ("glmops.server", "glmops.__main__")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of every glmops process here: the shim first on the path, this checkout, a private
    state directory; the user name from USERNAME, as Windows has it (no pwd to look it up)."""
    shim = write(tmp_path / "shim" / "sitecustomize.py", SHIM).parent
    base = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME")}
    return {**base, "PYTHONPATH": f"{shim}{os.pathsep}{ROOT}", "XDG_STATE_HOME": str(tmp_path / "state"), "USERNAME": "laptop-user",
            "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def run(env: dict[str, str], *args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def controller_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(glmops.__path__, "glmops.") if not m.name.startswith(NOT_CONTROLLER))


def test_the_shim_takes_the_posix_parts_away(env: dict[str, str]) -> None:
    probe = run(env, "-c", "import os, signal, importlib\n"
                           f"for n in {BLOCKED_MODULES!r}:\n"
                           "    try: importlib.import_module(n)\n"
                           "    except ImportError: pass\n"
                           "    else: raise SystemExit('importable: ' + n)\n"
                           f"left = [n for n in {BLOCKED_OS!r} if hasattr(os, n)] + [n for n in {BLOCKED_SIGNALS!r} if hasattr(signal, n)]\n"
                           "raise SystemExit('left: ' + repr(left) if left else 0)")
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_every_controller_module_imports(env: dict[str, str]) -> None:
    names = controller_modules()
    assert {"glmops.cli", "glmops.commands.tunnel", "glmops.commands.day2", "glmops.commands.chat", "glmops.commands.inventory",
            "glmops.connection.ssh", "glmops.connection.local", "glmops.tunnel", "glmops.output.console"} <= set(names)
    code = "import importlib, sys\nfailed = []\n" \
           f"for name in {names!r}:\n" \
           "    try: importlib.import_module(name)\n" \
           "    except Exception as exc: failed.append(f'{name}: {exc!r}')\n" \
           "print('\\n'.join(failed)); sys.exit(1 if failed else 0)"
    imported = run(env, "-c", code)
    assert imported.returncode == 0, imported.stdout + imported.stderr


def controller_commands() -> list[list[str]]:
    """Every command and subcommand of `glmops` but `serve` (the target's), read from the CLI itself."""
    from glmops.cli import COMMANDS, cli

    found: list[list[str]] = [[]]
    ctx = click.Context(cli)
    for name in COMMANDS:
        if name == "serve":
            continue
        command = cli.get_command(ctx, name)
        found.append([name])
        if isinstance(command, click.Group):
            found += [[name, sub] for sub in command.list_commands(click.Context(command))]
    return found


@pytest.mark.parametrize("command", controller_commands(), ids=lambda words: " ".join(words) or "glmops")
def test_help_of_every_controller_command(env: dict[str, str], command: list[str]) -> None:
    shown = run(env, "-m", "glmops", *command, "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: glmops"), shown.stdout + shown.stderr


def test_inventory_add_and_list(env: dict[str, str], tmp_path: Path) -> None:
    inv = tmp_path / "inventory.yml"
    added = run(env, "-m", "glmops", "inventory", "add", "box", "--group", "autodl", "-i", str(inv), "--", "ssh", "-p", "12345",
                "root@region-9.autodl.com")
    assert added.returncode == 0, added.stdout + added.stderr
    assert yaml.safe_load(inv.read_text())["all"]["children"]["autodl"]["hosts"]["box"] == {
        "ansible_host": "region-9.autodl.com", "ansible_port": 12345, "ansible_user": "root"}
    listed = run(env, "-m", "glmops", "inventory", "list", "-i", str(inv))
    assert listed.returncode == 0 and "box" in listed.stdout and "region-9.autodl.com" in listed.stdout, listed.stdout + listed.stderr


def _ssh_inventory(path: Path, sshd) -> Path:  # noqa: ANN001
    path.write_text(yaml.safe_dump({"all": {"hosts": {"laptop": sshd.hostvars()}}}))
    return path


def test_run_a_playbook_over_ssh_twice(env: dict[str, str], tmp_path: Path, sshd) -> None:
    inv = _ssh_inventory(tmp_path / "hosts.yml", sshd)
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: a folder
              file: {{path: "{tmp_path}/out", state: directory, mode: "0700"}}
            - name: a file
              copy: {{content: "hello\\n", dest: "{tmp_path}/out/a.txt", mode: "0600"}}
            - name: a line
              lineinfile: {{path: "{tmp_path}/out/b.env", line: "OPENAI_API_KEY=EMPTY", create: true}}
            - name: a command
              command: cat {tmp_path}/out/a.txt {tmp_path}/out/b.env
              register: shown
              changed_when: false
            - assert: {{that: ["'OPENAI_API_KEY=EMPTY' in shown.stdout_lines"]}}
              when: not ansible_check_mode
        """)
    checked = run(env, "-m", "glmops", "run", str(book), "-i", str(inv), "--check", "--json", cwd=tmp_path)
    assert checked.returncode == 0 and not (tmp_path / "out").exists(), checked.stdout[-3000:] + checked.stderr
    first = run(env, "-m", "glmops", "run", str(book), "-i", str(inv), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    assert (tmp_path / "out" / "a.txt").read_text() == "hello\n"
    assert (tmp_path / "out" / "b.env").read_text() == "OPENAI_API_KEY=EMPTY\n"
    assert recap(first.stdout)["laptop"]["changed"] == 3
    again = run(env, "-m", "glmops", "run", str(book), "-i", str(inv), "--json", cwd=tmp_path)
    assert again.returncode == 0 and recap(again.stdout)["laptop"]["changed"] == 0, again.stdout[-3000:]


def test_connection_local_is_refused_with_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.yml", "all:\n  hosts:\n    laptop: {ansible_connection: local}\n")
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - command: touch {tmp_path}/ran
        """)
    refused = run(env, "-m", "glmops", "run", str(book), "-i", str(inv), cwd=tmp_path)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    text = refused.stdout + refused.stderr
    assert "connection: local needs a POSIX controller" in text and "os.killpg" in text and "WSL" in text, text
    assert "Traceback" not in text and not (tmp_path / "ran").exists()


def test_ctrl_c_stops_the_remote_command(env: dict[str, str], tmp_path: Path, sshd) -> None:
    mark = f"glmops-test-{uuid.uuid4().hex}"
    inv = _ssh_inventory(tmp_path / "hosts.yml", sshd)
    book = write(tmp_path / "site.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: long sleep
              command: sleep 300
              environment: {{GLMOPS_TEST_MARK: "{mark}"}}
        """)
    argv = [sys.executable, "-m", "glmops", "run", str(book), "-i", str(inv), "--json"]
    returncode, out, err, survivors = interrupt_once_marked(argv, mark, env=env, cwd=tmp_path, timeout=30, grace=5)
    assert returncode == 99, out[-2000:] + err
    assert any(e["event"] == "recap" for e in events(out))
    assert not survivors, "the command outlived the run"


def test_tunnel_background_status_stop_and_facts_over_ssh(env: dict[str, str], tmp_path: Path, sshd) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"box": sshd.hostvars()}}}))
    with LoopbackHTTPServer() as http:
        http.files["/health"] = b'{"status":"ok"}'
        local = free_port()
        started = run(env, "-m", "glmops", "tunnel", "open", "box", "-i", str(inv), "--local-port", str(local),
                      "--remote-port", str(http.port), "--background", timeout=60)
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/health", timeout=10) as response:
                assert response.read() == b'{"status":"ok"}'
            status = run(env, "-m", "glmops", "tunnel", "status")
            assert status.returncode == 0 and "box" in status.stdout and f"{local}" in status.stdout, status.stdout + status.stderr
        finally:
            stopped = run(env, "-m", "glmops", "tunnel", "stop", "box")
        assert stopped.returncode == 0 and "closed the tunnel" in stopped.stdout, stopped.stdout + stopped.stderr
        assert run(env, "-m", "glmops", "tunnel", "status").stdout.strip() == "no tunnels open"
    facts = run(env, "-m", "glmops", "facts", "box", "-i", str(inv))
    assert facts.returncode == 0 and "profile" in facts.stdout.lower(), facts.stdout + facts.stderr
