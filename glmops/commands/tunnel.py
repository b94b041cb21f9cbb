"""`glmops tunnel HOST | status | stop`: reach the API server on a host through an SSH tunnel.

Every open tunnel (foreground or background) keeps a small JSON state file in the user's state
directory ($XDG_STATE_HOME/glmops/tunnels, ~/.local/state/glmops/tunnels, or
%LOCALAPPDATA%\\glmops\\tunnels on Windows): pid, host, ports, and its live figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from glmops.commands.complete import complete_hosts, complete_tunnel_hosts
from glmops.commands.prompts import read_secret
from glmops.commands.tunnel_state import read_states, state_path, write_state
from glmops.errors import EXIT_ERROR, ArgumentError, GlmopsError

DEFAULT_INVENTORY = "inventory/hosts.yml"
DEFAULT_PORT = 6006
START_TIMEOUT = 60.0  # seconds a --background start may take before the parent gives up waiting


# -- state files (their reading and writing: tunnel_state.py) ---------------------------------
def _drop_bad_state(path: Path, why: str) -> None:
    """A broken state file is stale: say so and remove it (nothing is signalled)."""
    click.secho(f"warning: ignoring the tunnel state file {path}: {why}; removed it", fg="yellow", err=True)
    path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (portable: os.kill(pid, 0) would kill it on Windows)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if os.path.exists(f"/proc/{pid}/stat"):
        with open(f"/proc/{pid}/stat", "rb") as handle:
            if handle.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                return False  # exited, not yet reaped by its parent
    return True


def process_start(pid: int) -> str | None:
    """A token that changes when `pid` is reused: the `ident` of glmops.modules._detached (start time from
    /proc, else `ps -o lstart`), run by /bin/sh here; '' when the pid does not run; None without /bin/sh."""
    if os.name == "nt":
        return None
    from glmops.modules._detached import FUNCTIONS

    try:
        found = subprocess.run(["/bin/sh", "-c", FUNCTIONS + 'ident "$1"', "sh", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip()


def check_tunnel(state: dict[str, Any]) -> tuple[str, str]:
    """("live", "") when the state's pid is still the tunnel that wrote it (same start time); ("gone", why)
    when it ended or the pid was reused; ("unproven", why) when it runs but the state file (from an older
    glmops) has no start time to prove it: such a process is never signalled."""
    pid = int(state["pid"])
    if not pid_alive(pid):
        return "gone", "it has ended"
    if "start" not in state:
        return "unproven", (f"pid {pid} runs, but {state.get('path')} records no start time (written by an older glmops), so it "
                            f"cannot be proved to be the tunnel and is not signalled; if it is, stop it by hand (kill {pid}), "
                            "then the state file goes with the next `glmops tunnel status`")
    recorded, now = state["start"], process_start(pid)
    if recorded is None or now is None:  # no start time on this system (Windows): the pid alone decides
        return "live", ""
    if now != recorded:
        return "gone", f"pid {pid} is now another process (started {now}, not {recorded})"
    return "live", ""


def _is_our_tunnel(state: dict[str, Any]) -> bool:
    """The pid still runs and is still the tunnel that wrote the state, not a reused pid."""
    return check_tunnel(state)[0] == "live"


# -- helpers --------------------------------------------------------------------------------
def _fail(exc: GlmopsError) -> None:
    click.secho(f"ERROR: {exc}", fg="red", err=True)
    sys.exit(exc.exit_code)


def _human(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _host_settings(host: str, sources: tuple[str, ...]) -> dict[str, Any]:
    """The host's inventory variables, templates rendered (as `glmops run` sees them)."""
    from glmops.inventory import load_inventory
    from glmops.playbook.templating import Templar

    from glmops.commands._hosts import ssh_config_alias

    given = bool(sources) or bool(os.environ.get("GLMOPS_INVENTORY"))
    if not sources:
        sources = (os.environ.get("GLMOPS_INVENTORY") or DEFAULT_INVENTORY,)
    if not any(os.path.exists(s) or "," in s for s in sources):
        if not given and ssh_config_alias(host):  # `ssh ALIAS` works without an inventory: so does the tunnel
            return {"inventory_hostname": host}
        raise GlmopsError(f"inventory {', '.join(sources)} not found", field="-i",
                          hint=f"add the host first: glmops inventory add {host} -- ssh -p PORT user@host (or give -i FILE)")
    inventory = load_inventory(list(sources))
    if host not in inventory.hosts:
        if ssh_config_alias(host):
            return {"inventory_hostname": host}
        known = ", ".join(sorted(inventory.hosts)[:10]) or "none"
        raise GlmopsError(f"unknown host {host!r}: it is not in {', '.join(sources)} (hosts there: {known})", field="HOST",
                          hint=f"add it: glmops inventory add {host} -i {sources[0]} -- ssh -p PORT user@host")
    variables = inventory.host_vars(host)
    # Only what the tunnel uses is rendered: other variables may refer to a playbook's vars.
    wanted = {k: v for k, v in variables.items() if k.startswith(("ansible_", "glmops_")) or k in ("host_key_checking", "api_port")}
    context = {**variables, "inventory_hostname": host}
    return {**variables, **Templar().render(wanted, context, field="connection variables")}


def _connector(host: str, variables: dict[str, Any], policy: str | None):
    """A function that returns a freshly connected paramiko Transport for `host` on every call."""
    from glmops.connection.factory import open_connection
    from glmops.connection.ssh import SSHConnection

    connection = open_connection(host, variables, host_key_checking=policy)
    if not isinstance(connection, SSHConnection):
        raise GlmopsError(f"host {host} uses a local connection: no tunnel is needed",
                          hint="the server is on this machine already: http://127.0.0.1:PORT")

    def connect():
        connection.close()  # a dead transport's threads and socket go first
        connection.connect()
        return connection.transport

    return connect, connection


# -- the commands ---------------------------------------------------------------------------
class _TunnelGroup(click.Group):
    """`glmops tunnel HOST ...` means `glmops tunnel open HOST ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["open", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_TunnelGroup, context_settings={"help_option_names": ["-h", "--help"]})
def tunnel() -> None:
    """Reach a host's API server through an SSH tunnel (like `ssh -N -L 6006:127.0.0.1:6006`),
    kept up with keepalives and reconnects.

    \b
      glmops tunnel autodl-3090 -i inventory/autodl.yml        # foreground, Ctrl-C closes
      glmops tunnel autodl-3090 -i inventory/autodl.yml --background
      glmops tunnel status
      glmops tunnel stop autodl-3090      (or: glmops tunnel stop --all)
    """


@tunnel.command("open", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host", shell_complete=complete_hosts)
@click.option("-i", "--inventory", "sources", multiple=True, help=f"Inventory file or directory (default $GLMOPS_INVENTORY or {DEFAULT_INVENTORY}).")
@click.option("--local-port", type=click.IntRange(0, 65535), help="Port on this machine (default: the remote port, 6006). 0 picks a free one.")
@click.option("--remote-port", type=click.IntRange(1, 65535), help="The server's port on the host (default: the host's api_port variable, else 6006).")
@click.option("--remote-host", default="127.0.0.1", show_default=True, help="Address the host connects to (the server binds 127.0.0.1).")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Local address to listen on (0.0.0.0 shares the tunnel with your network).")
@click.option("--background", is_flag=True, help="Detach; see it with `glmops tunnel status`, close it with `glmops tunnel stop`.")
@click.option("-k", "--ask-pass", is_flag=True, help="Ask for the SSH password (read from stdin when it is not a terminal).")
@click.option("--accept-new-host-keys", is_flag=True, help="Record the key of a host seen for the first time (a changed key is always refused).")
@click.option("--keepalive", type=click.FloatRange(0), default=15.0, show_default=True, help="Seconds between keepalive probes; 3 unanswered ones drop and rebuild the link (0: off).")
@click.option("--detached", is_flag=True, hidden=True)
def open_tunnel(host: str, sources: tuple[str, ...], local_port: int | None, remote_port: int | None, remote_host: str,
                bind: str, background: bool, ask_pass: bool, accept_new_host_keys: bool, keepalive: float, detached: bool) -> None:
    """Forward a local port to the API server on HOST (an inventory host)."""
    try:
        variables = _host_settings(host, sources)
        if remote_port is None:
            remote_port = _port_var(variables.get("api_port"), "api_port") or DEFAULT_PORT
        if local_port is None:
            local_port = remote_port
        password = read_secret(f"SSH password for {host}", "--ask-pass") if ask_pass else None
        if password is not None:
            variables["ansible_password"] = password
        if background:
            sys.exit(_start_background(host, sources, local_port, remote_port, remote_host, bind, accept_new_host_keys, keepalive, password))
        _run_tunnel(host, variables, local_port, remote_port, remote_host, bind,
                    "accept-new" if accept_new_host_keys else None, keepalive, detached)
    except GlmopsError as exc:
        _fail(exc)
    except OSError as exc:  # e.g. the state directory cannot be written
        _fail(GlmopsError(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"))


def _port_var(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise GlmopsError(f"host variable {name} must be a port number, got {value!r}", field=name) from None
    if not 0 < port < 65536:
        raise GlmopsError(f"host variable {name} {port} is out of range", field=name)
    return port


def _run_tunnel(host: str, variables: dict[str, Any], local_port: int, remote_port: int, remote_host: str, bind: str,
                policy: str | None, keepalive: float, detached: bool) -> None:
    from glmops.tunnel import Forwarder

    # This process only forwards: hand the GIL between its threads every 2 ms instead of 5 ms, so a
    # packet that arrived is passed on sooner (0.5 ms was faster still for new connections on a quiet
    # machine, but slower for keep-alive requests and bulk transfers on a busy one).
    sys.setswitchinterval(0.002)
    import logging

    logging.getLogger("paramiko").addHandler(logging.NullHandler())  # our own messages say what happened
    logging.getLogger("paramiko").propagate = False
    interactive = sys.stdout.isatty() and not detached
    live = {"line": False}

    def say(text: str) -> None:
        if live["line"]:
            click.echo("\r\033[K", nl=False)
            live["line"] = False
        click.echo(f"[{time.strftime('%H:%M:%S')}] {text}" if not interactive or detached else text)

    connect, probe = _connector(host, variables, policy)
    where = f"{probe.user}@{probe.hostname}:{probe.port}"  # type: ignore[attr-defined]
    forwarder = Forwarder(connect, remote_port=remote_port, local_port=local_port, remote_host=remote_host, bind=bind,
                          keepalive=keepalive, on_event=lambda kind, message: say(message))
    forwarder.listen()
    path = state_path(host, forwarder.local_port)
    url_host = f"[{bind}]" if ":" in bind else ("127.0.0.1" if bind in ("0.0.0.0", "") else bind)
    url = f"http://{url_host}:{forwarder.local_port}"
    record = {"pid": os.getpid(), "host": host, "ssh": where, "bind": bind, "local_port": forwarder.local_port,
              "remote_host": remote_host, "remote_port": remote_port, "url": url, "mode": "background" if detached else "foreground",
              "started": time.time(), "start": process_start(os.getpid())}
    stop_requested = {"flag": False}
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, lambda *_: stop_requested.__setitem__("flag", True))
    try:
        try:
            forwarder.start()
        except GlmopsError:
            raise
        say(f"{url} -> {host}:{remote_port} ({where}, {remote_host}:{remote_port} on the host)")
        say("up; Ctrl-C closes the tunnel" if not detached else f"up (pid {os.getpid()}); close with: glmops tunnel stop {host}")
        last = {"state": 0.0, "line": 0.0, "snapshot": None}

        def tick() -> None:
            now = time.monotonic()
            stats = forwarder.stats.as_dict()
            snapshot = {k: v for k, v in stats.items() if k != "since"}
            changed = snapshot != last["snapshot"]
            if changed and (now - last["state"] >= 2 or (last["snapshot"] or {}).get("state") != snapshot["state"]):
                last["state"], last["snapshot"] = now, snapshot
                write_state(path, {**record, "stats": stats})
            if interactive and now - last["line"] >= 1:
                last["line"] = now
                click.echo(f"\r\033[K{stats['state']} · {stats['requests']} requests ({stats['active']} open, {stats['failed']} failed)"
                           f" · in {_human(stats['bytes_in'])} · out {_human(stats['bytes_out'])}"
                           f" · {stats['reconnects']} reconnects", nl=False)
                live["line"] = True

        write_state(path, {**record, "stats": forwarder.stats.as_dict()})
        forwarder.run(until=lambda: stop_requested["flag"], tick=tick)
    except KeyboardInterrupt:
        pass
    finally:
        forwarder.close()
        try:
            path.unlink()
        except (FileNotFoundError, UnboundLocalError):
            pass
    if forwarder.fatal is not None:
        raise forwarder.fatal
    say(f"closed; {_human(forwarder.stats.bytes_in)} in, {_human(forwarder.stats.bytes_out)} out, {forwarder.stats.requests} requests")


def _start_background(host: str, sources: tuple[str, ...], local_port: int, remote_port: int, remote_host: str, bind: str,
                      accept_new: bool, keepalive: float, password: str | None) -> int:
    """Start this command again as a detached process; wait until it is up or has failed."""
    if local_port == 0:
        raise ArgumentError("--background needs a fixed --local-port", field="--local-port", hint="e.g. --local-port 6006")
    path = state_path(host, local_port)
    for state in read_states():
        if state.get("host") == host and state.get("local_port") == local_port and _is_our_tunnel(state):
            click.echo(f"a tunnel to {host} on {state.get('url')} is already open (pid {state['pid']})")
            return 0
    args = [sys.executable, "-m", "glmops", "tunnel", "open", host, "--local-port", str(local_port), "--remote-port", str(remote_port),
            "--remote-host", remote_host, "--bind", bind, "--keepalive", str(keepalive), "--detached"]
    for source in sources:
        args += ["-i", os.path.abspath(source) if os.path.exists(source) else source]
    if accept_new:
        args.append("--accept-new-host-keys")
    if password is not None:
        args.append("--ask-pass")
    path.parent.mkdir(parents=True, exist_ok=True)
    log_path = path.with_suffix(".log")
    options: dict[str, Any] = {}
    if os.name == "nt":
        options["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        options["start_new_session"] = True  # Ctrl-C in this terminal no longer reaches it
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env, **options)
    if child.stdin is not None:
        try:
            child.stdin.write(((password or "") + "\n").encode())
            child.stdin.close()
        except OSError:
            pass
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            text = log_path.read_text(errors="replace").strip()
            click.echo(text, err=True)
            return code or EXIT_ERROR
        if path.exists():
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("pid") == child.pid:
                click.echo(f"{state['url']} -> {host}:{remote_port} (background, pid {child.pid}; log {log_path})")
                click.echo(f"check: glmops tunnel status    close: glmops tunnel stop {host}")
                return 0
        time.sleep(0.05)
    child.terminate()
    raise GlmopsError(f"the background tunnel did not come up within {START_TIMEOUT:.0f} s; its log: {log_path}")


def _health(url: str, timeout: float = 3.0) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return "ok" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer ({reason})"


@tunnel.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def status(as_json: bool) -> None:
    """List open tunnels and whether the server answers /health through each."""
    rows = []
    for state in read_states(_drop_bad_state):
        verdict, why = check_tunnel(state)
        if verdict == "unproven":
            click.secho(f"warning: {why}", fg="yellow", err=True)
            continue
        if verdict == "gone":
            Path(state["path"]).unlink(missing_ok=True)  # left behind by a tunnel that was killed
            continue
        stats = state.get("stats") or {}
        rows.append({**state, "state": stats.get("state", "?"), "health": _health(state["url"])})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no tunnels open")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for column in ("host", "local", "remote", "pid", "mode", "link", "/health", "requests", "in / out"):
        table.add_column(column)
    for row in rows:
        stats = row.get("stats") or {}
        cells = [row["host"], row["url"], f"{row['remote_host']}:{row['remote_port']}", str(row["pid"]), row.get("mode", ""),
                 row["state"], row["health"], str(stats.get("requests", 0)),
                 f"{_human(stats.get('bytes_in', 0))} / {_human(stats.get('bytes_out', 0))}"]
        table.add_row(*(escape(str(c)) for c in cells))
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)


@tunnel.command("stop", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host", required=False, shell_complete=complete_tunnel_hosts)
@click.option("--all", "stop_all", is_flag=True, help="Close every open tunnel.")
def stop(host: str | None, stop_all: bool) -> None:
    """Close the tunnels to HOST (or all of them with --all)."""
    if not host and not stop_all:
        _fail(ArgumentError("name the host whose tunnel to close, or give --all", field="HOST", hint="see them: glmops tunnel status"))
    stopped, unproven = stop_tunnels(None if stop_all else host)
    if unproven:
        sys.exit(EXIT_ERROR)
    if not stopped:
        click.echo(f"no tunnel to {host} is open" if host else "no tunnels open")


def stop_tunnels(host: str | None) -> tuple[int, int]:
    """Close the tunnels to `host` (None: all), saying so; (closed, left alone because unproven)."""
    states = [s for s in read_states(_drop_bad_state) if host is None or s.get("host") == host]
    stopped = unproven = 0
    for state in states:
        verdict, why = check_tunnel(state)
        if verdict == "unproven":
            click.secho(f"ERROR: not closed: {why}", fg="red", err=True)
            unproven += 1
            continue
        if verdict == "live":
            _terminate(int(state["pid"]))
            stopped += 1
            click.echo(f"closed the tunnel {state.get('url')} -> {state.get('host')}:{state.get('remote_port')} (pid {state['pid']})")
        Path(state["path"]).unlink(missing_ok=True)
        Path(state["path"]).with_suffix(".log").unlink(missing_ok=True)
    return stopped, unproven


def _terminate(pid: int, wait: float = 5.0) -> None:
    """Ask the tunnel to close (SIGTERM: it frees the port and removes its state); kill it if it hangs."""
    try:
        os.kill(pid, signal.SIGTERM)  # on Windows this is TerminateProcess
    except (ProcessLookupError, PermissionError, OSError):
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    if hasattr(signal, "SIGKILL"):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
