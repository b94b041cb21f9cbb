"""Day-2 commands on the server a deploy installed: status, logs, stop, restart, facts.

They read the same inventory as `glmops run`, find the deployment's files through glmops.layout
(deploy_dir, api_host, api_port from the host's variables or -e) and drive the daemon with the same
code as the `daemon` module (glmops/modules/_detached.py).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Any

import click

from glmops.commands._hosts import Target, connected, for_each, inventory_option, load_targets, run_command
from glmops.commands.complete import complete_hosts, complete_patterns
from glmops.errors import EXIT_HOST_FAILED, EXIT_HOST_UNREACHABLE, ConnectionFailure, GlmopsError
from glmops.layout import Layout
from glmops.modules import _detached

CONTEXT = {"help_option_names": ["-h", "--help"]}

# Ask the server's /health from the host itself (never through a proxy): the venv's python, else
# python3, else curl. Prints `code=N` (0 when nothing answered) and the body on one line.
HEALTH_PY = (
    "import sys, urllib.request, urllib.error\n"
    "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
    "try:\n"
    "    r = opener.open(sys.argv[1], timeout=5); code, body = r.status, r.read()\n"
    "except urllib.error.HTTPError as e:\n"
    "    code, body = e.code, e.read()\n"
    "except Exception as e:\n"
    "    code, body = 0, str(getattr(e, 'reason', e)).encode()\n"
    "print('code=%d' % code); print(body.decode('utf-8', 'replace').replace('\\n', ' '))\n"
)


def paths_of(layout: Layout) -> _detached.Paths:
    return _detached.Paths(layout.pid_file, layout.log_file)


def health_script(layout: Layout) -> str:
    url = shlex.quote(layout.health_url)
    venv_python = shlex.quote(f"{layout.venv}/bin/python")
    return (
        f"echo @@health; py={venv_python}; [ -x \"$py\" ] || py=$(command -v python3 2>/dev/null); "
        f"if [ -n \"$py\" ]; then \"$py\" -c {shlex.quote(HEALTH_PY)} {url}; "
        f"elif command -v curl >/dev/null 2>&1; then b=$(curl -sS --noproxy '*' -m 5 -w '\\n%{{http_code}}' {url} 2>&1); "
        "echo \"code=$(printf '%s\\n' \"$b\" | tail -n 1 | tr -dc 0-9)\"; printf '%s\\n' \"$b\" | sed '$d' | tr '\\n' ' '; echo; "
        "else echo code=0; echo 'neither python3 nor curl on the host'; fi"
    )


def parse_health(text: str) -> tuple[int, dict[str, Any] | None, str]:
    """(HTTP code, JSON body or None, raw text) from health_script's output."""
    lines = text.partition("@@health\n")[2].splitlines()
    code = 0
    if lines and lines[0].startswith("code="):
        digits = lines[0][5:].strip()
        code = int(digits) if digits.isdigit() else 0
    raw = " ".join(lines[1:]).strip()
    try:
        body = json.loads(raw) if raw.startswith("{") else None
    except ValueError:
        body = None
    return code, body if isinstance(body, dict) else None, raw


def _gb(mb: Any) -> str:
    return f"{float(mb) / 1024:.1f}"


def summarize(target: Target, status: _detached.Status, code: int, body: dict[str, Any] | None, raw: str) -> dict[str, Any]:
    """One host's row: what runs, and what /health says (pure; see docs/day2.md for the fields)."""
    layout = target.layout
    row: dict[str, Any] = {
        "host": target.name, "state": "down", "pid": status.pid if status.running else None,
        "uptime_s": status.uptime_s, "port": layout.api_port, "url": layout.health_url,
        "model": None, "backend": None, "device": None, "dtype": None, "gpu_memory": None,
        "health": None, "exit_code": status.exit_code, "log_file": layout.log_file, "message": "",
    }
    if body:
        row.update(model=body.get("model"), backend=body.get("backend"), device=body.get("device"), dtype=body.get("dtype"),
                   health=body.get("status"))
        gpus = body.get("gpus") or []
        if gpus:
            used = sum(float(g.get("memory_used_mb") or 0) for g in gpus)
            total = sum(float(g.get("memory_total_mb") or 0) for g in gpus)
            row["gpu_memory"] = f"{_gb(used)}/{_gb(total)} GB"
    if code == 200 and body and body.get("status") == "ok":
        row["state"] = "up"
        if not status.running:
            row["message"] = f"answers, but was not started by glmops (no live process in {layout.pid_file})"
    elif code == 503 and body and body.get("status") == "loading":
        row["state"] = "loading"
        row["message"] = "the model is loading"
    elif status.running:
        row["state"] = "unhealthy"
        row["message"] = (f"/health: {body.get('error') or body.get('status')}" if body else
                          f"/health did not answer ({raw or 'no answer'})" if code == 0 else f"/health answered HTTP {code}: {raw[:200]}")
    elif status.unverified:
        row["message"] = _detached.unverified_message(paths_of(layout), status.pid)
    else:
        ended = f" (exit code {status.exit_code})" if status.exit_code is not None else ""
        row["message"] = (f"not running{ended}; see `glmops logs {target.name}`" if status.pid or status.script
                          else f"not deployed here ({layout.pid_file} does not exist)")
    return row


def probe(target: Target, accept_new: bool) -> dict[str, Any]:
    """status + /health of one host in one round trip; an unreachable host is a row too."""
    try:
        with connected(target, accept_new) as conn:
            paths = paths_of(target.layout)
            result = conn.run(_detached.FUNCTIONS + _detached.status_lines(paths)
                              + "; " + health_script(target.layout), timeout=60)
    except ConnectionFailure as exc:
        return {"host": target.name, "state": "unreachable", "message": exc.message, "port": target.layout.api_port}
    status = _detached.parse_status(result.stdout)
    code, body, raw = parse_health(result.stdout)
    return summarize(target, status, code, body, raw)


def _uptime(seconds: Any) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


STATE_STYLE = {"up": "green", "loading": "yellow", "unhealthy": "red", "down": "red", "unreachable": "magenta"}


def print_table(rows: list[dict[str, Any]]) -> None:
    """A table of the hosts; notes (why a host is not up) on lines below it."""
    import shutil

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(shutil.get_terminal_size((160, 24)).columns, 100))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("HOST", "STATE", "PID", "UPTIME", "PORT", "MODEL", "BACKEND", "DEVICE", "DTYPE", "GPU MEM"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        state = row["state"]
        table.add_row(row["host"], f"[{STATE_STYLE.get(state, 'white')}]{state}[/]", str(row.get("pid") or "-"),
                      _uptime(row.get("uptime_s")), str(row.get("port") or "-"), row.get("model") or "-",
                      row.get("backend") or "-", row.get("device") or "-", row.get("dtype") or "-", row.get("gpu_memory") or "-")
    console.print(table)
    for row in rows:
        if row.get("message"):
            console.print(f"{row['host']}: {row['message']}", markup=False, soft_wrap=True)


def exit_code_of(rows: list[dict[str, Any]]) -> int:
    """0 when every server is up; 2 when one is down, loading or unhealthy; 4 when only unreachable hosts fail."""
    states = {row["state"] for row in rows}
    if states - {"up", "unreachable"}:
        return EXIT_HOST_FAILED
    if "unreachable" in states:
        return EXIT_HOST_UNREACHABLE
    return 0


STATUS_EPILOG = """\b
Exit codes: 0 every server answers /health with ok; 2 a server is down, loading or unhealthy;
4 a host could not be reached (and no server is down)."""


@click.command(context_settings=CONTEXT, epilog=STATUS_EPILOG)
@click.argument("pattern", default="all", shell_complete=complete_patterns)
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per host.")
@click.option("-f", "--forks", default=10, show_default=True, type=click.IntRange(1, 500), help="Hosts asked at once.")
def status(pattern: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, as_json: bool, forks: int) -> None:
    """Is the API server up on the hosts of PATTERN (default: all)? pid, uptime, port, model, backend,
    device, dtype, GPU memory, and /health as seen from the host."""

    def body() -> int:
        targets = load_targets(pattern, inventories, extra_vars)
        rows = for_each(targets, lambda t: probe(t, accept_new), forks)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            print_table(rows)
        return exit_code_of(rows)

    run_command(body, as_json=as_json)


LINE_CAP = 64 * 1024  # `glmops logs -n N` reads at most N times this many bytes from the log's end,
TOTAL_CAP = 16 * 1024 * 1024  # and never more than this
FOLLOW_CAP = 1024 * 1024  # `-f` prints at most this many of the bytes appended between two reads
CUT_MARK = "[cut] "


def last_lines(text: str, count: int, capped: bool) -> tuple[str, bool]:
    """The last `count` lines of `text`, the tail of a log. `capped`: `text` is the log's last bytes plus one,
    so its first line may have begun earlier (unless it is just the newline before them); such a line,
    when shown, starts with CUT_MARK. Returns (text to print, whether a line was cut)."""
    whole = not capped or text.startswith("\n")
    if capped and whole:
        text = text[1:]
    parts = text.splitlines(keepends=True)
    shown = parts[len(parts) - count:] if count else []
    cut = not whole and bool(shown) and len(shown) == len(parts)
    if cut:
        shown[0] = CUT_MARK + shown[0]
    return "".join(shown), cut


def _follow_step(conn: Any, target: Target, log: str, offset: int) -> int:
    """Print what was appended to the log (`log`: quoted) since `offset`, at most FOLLOW_CAP bytes; the new offset."""
    step = conn.run(f"s=$(wc -c < {log} 2>/dev/null || echo 0); f={offset}; "
                    f"[ \"$s\" -gt $((f + {FOLLOW_CAP})) ] && f=$((s - {FOLLOW_CAP})); echo \"$s $f\"; "
                    f"if [ \"$s\" -gt \"$f\" ]; then tail -c +$((f + 1)) -- {log} | head -c $((s - f)); fi")
    head, _, new = step.stdout.partition("\n")
    numbers = [int(n) for n in head.split() if n.isdigit()]
    size, start = numbers if len(numbers) == 2 else (0, 0)
    if size < offset:
        click.echo(f"--- {target.layout.log_file} was truncated; following from its start ---", err=True)
        return 0
    if start > offset:
        click.echo(f"\n--- skipped {start - offset} bytes: more than {FOLLOW_CAP} bytes were appended at once ---", err=True)
    if new:
        click.echo(new, nl=False)
        sys.stdout.flush()
    return size


@click.command(context_settings=CONTEXT)
@click.argument("host", shell_complete=complete_hosts)
@inventory_option
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(0, 1_000_000),
              help=f"Lines to show (from the log's last N x {LINE_CAP // 1024} KiB, {TOTAL_CAP // 2**20} MiB at most; a line cut there starts with {CUT_MARK.strip()}).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what is appended (Ctrl-C to stop).")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(0.05, 60), help="Seconds between reads with -f.")
def logs(host: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, lines: int, follow: bool,
         interval: float) -> None:
    """Show the API server's log on HOST (its last lines; -f follows it)."""

    def body() -> int:
        target = load_targets(host, inventories, extra_vars, single=True)[0]
        log = shlex.quote(target.layout.log_file)
        cap = min(max(lines, 1) * LINE_CAP, TOTAL_CAP)
        with connected(target, accept_new) as conn:
            first = conn.run(f"if [ -f {log} ]; then wc -c < {log}; tail -c {cap + 1} -- {log}; else echo missing; fi")
            size_line, _, text = first.stdout.partition("\n")
            if size_line.strip() == "missing" and not follow:
                raise GlmopsError(f"{target.name}: no log at {target.layout.log_file}",
                                  hint=f"is the server deployed there? `glmops status {target.name}`")
            offset = int(size_line) if size_line.strip().isdigit() else 0
            shown, cut = last_lines(text, lines, offset > cap + 1)  # else the whole log was read
            if cut:
                click.echo(f"--- the first line shown is cut (it starts with {CUT_MARK.strip()}): only the log's last {cap} bytes "
                           f"are read for -n {lines} ({LINE_CAP // 1024} KiB a line, {TOTAL_CAP // 2**20} MiB at most) ---", err=True)
            click.echo(shown, nl=False)
            sys.stdout.flush()
            while follow:
                time.sleep(interval)
                offset = _follow_step(conn, target, log, offset)
        return 0

    try:
        run_command(body)
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C between reads
        raise SystemExit(0) from None


@click.command(context_settings=CONTEXT)
@click.argument("host", shell_complete=complete_hosts)
@inventory_option
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0), help="Seconds between TERM and KILL.")
def stop(host: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, timeout: float) -> None:
    """Stop the API server on HOST (a pattern; every matching host)."""

    def body() -> int:
        code = 0
        for target in load_targets(host, inventories, extra_vars):
            result = stop_server(target, accept_new, timeout)
            code = code if result == 0 else (result if code in (0, EXIT_HOST_UNREACHABLE) else code)
        return code

    run_command(body)


def stop_server(target: Target, accept_new: bool, timeout: float) -> int:
    """Stop the server on one host, saying what happened; 0, EXIT_HOST_FAILED or EXIT_HOST_UNREACHABLE."""
    paths = paths_of(target.layout)
    try:
        with connected(target, accept_new) as conn:
            result = _detached.stop(conn, paths, grace=timeout)
    except ConnectionFailure as exc:
        click.secho(f"{target.name}: UNREACHABLE: {exc.message}", fg="magenta", err=True)
        return EXIT_HOST_UNREACHABLE
    if result.unverified:
        pid = result.status.pid if result.status else None
        click.secho(f"{target.name}: not stopped: {_detached.unverified_message(paths, pid)}", fg="red", err=True)
        return EXIT_HOST_FAILED
    if result.status is not None and result.status.running:
        click.secho(f"{target.name}: pid {result.status.pid} did not stop", fg="red", err=True)
        return EXIT_HOST_FAILED
    if result.was_running:
        how = " (killed after the TERM grace period)" if result.killed else ""
        click.echo(f"{target.name}: stopped{how}")
    else:
        click.echo(f"{target.name}: not running")
    return 0


def wait_healthy(conn: Any, target: Target, timeout: float, say: Any) -> tuple[bool, str]:
    """Poll /health from the host until it says ok, the process dies, or `timeout` passes."""
    paths = paths_of(target.layout)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        result = conn.run(_detached.FUNCTIONS + _detached.status_lines(paths)
                          + "; " + health_script(target.layout), timeout=60)
        status = _detached.parse_status(result.stdout)
        code, body, raw = parse_health(result.stdout)
        if code == 200 and body and body.get("status") == "ok":
            return True, "healthy"
        if not status.running:
            ended = f"exit code {status.exit_code}" if status.exit_code is not None else "no exit code recorded"
            return False, f"the server exited ({ended})"
        if body and body.get("status") == "error":
            return False, f"the model failed to load: {body.get('error')}"
        now = (body or {}).get("status") or "starting"
        if now != last:
            say(f"{target.name}: waiting for /health ({now})")
            last = now
        if time.monotonic() > deadline:
            return False, f"/health did not say ok within {timeout:.0f} s (last: {now})"
        time.sleep(1.0)


@click.command(context_settings=CONTEXT)
@click.argument("host", shell_complete=complete_hosts)
@inventory_option
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to wait for /health to say ok (loading the real model takes minutes).")
@click.option("--no-wait", is_flag=True, help="Do not wait for /health.")
@click.option("--stop-timeout", default=30.0, show_default=True, type=click.FloatRange(0), help="Seconds between TERM and KILL.")
def restart(host: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, timeout: float,
            no_wait: bool, stop_timeout: float) -> None:
    """Restart the API server on HOST with the command the deploy started it with, and wait until healthy."""

    def body() -> int:
        code = 0
        for target in load_targets(host, inventories, extra_vars):
            paths = paths_of(target.layout)
            try:
                with connected(target, accept_new) as conn:
                    current = _detached.status(conn, paths)
                    if current.unverified:
                        click.secho(f"{target.name}: not restarted: {_detached.unverified_message(paths, current.pid)}", fg="red", err=True)
                        code = EXIT_HOST_FAILED
                        continue
                    if not current.script:
                        raise GlmopsError(f"{target.name}: no server command recorded in {paths.cmd_file}",
                                          hint="deploy first (glmops run playbooks/...), which starts the server with the daemon module")
                    if current.running:
                        stopped = _detached.stop(conn, paths, grace=stop_timeout)
                        if stopped.status is not None and stopped.status.running:
                            click.secho(f"{target.name}: pid {current.pid} did not stop", fg="red", err=True)
                            code = EXIT_HOST_FAILED
                            continue
                    started = _detached.start(conn, paths, current.script, wait=1.0)
                    ok, why = (started.running, "") if no_wait else (False, "")
                    if started.running and not no_wait:
                        ok, why = wait_healthy(conn, target, timeout, lambda text: click.echo(text, err=True))
                    elif not started.running:
                        why = f"the server exited right after the start (exit code {started.exit_code})"
                    if ok:
                        by = "; another run started it at the same time" if started.attached else ""
                        click.echo(f"{target.name}: restarted (pid {started.pid}{by})" + ("" if no_wait else ", healthy"))
                    else:
                        tail = _detached.tail(conn, paths.log_file, 20).rstrip("\n")
                        click.secho(f"{target.name}: {why}; last lines of {paths.log_file}:\n{tail or '(empty)'}", fg="red", err=True)
                        code = EXIT_HOST_FAILED
            except ConnectionFailure as exc:
                click.secho(f"{target.name}: UNREACHABLE: {exc.message}", fg="magenta", err=True)
                code = code or EXIT_HOST_UNREACHABLE
        return code

    run_command(body)


FACT_LABELS = [
    ("glmops_gpus", "GPUs"), ("glmops_driver", "driver"), ("glmops_cuda", "CUDA"), ("glmops_apple_silicon", "Apple Silicon"),
    ("glmops_ram_mb", "RAM"), ("glmops_ram_available_mb", "RAM available"), ("glmops_disk_free_mb", "free disk"),
    ("glmops_autodl", "AutoDL"), ("glmops_profile", "profile"), ("glmops_profile_reason", "reason"),
]


def gather_facts(conn: Any, target: Target) -> tuple[dict[str, Any], str | None]:
    """(facts, refusal) through the gpu_facts module; refusal is the reason a requested profile cannot run."""
    from glmops.modules import get_module
    from glmops.modules.base import ModuleContext, validate_args

    module = get_module("gpu_facts")
    args = {"profile": str(target.var("profile", "auto")), "disk_path": target.layout.deploy_dir}
    if target.var("network_turbo_path"):
        args["network_turbo_path"] = str(target.var("network_turbo_path"))
    validated = validate_args(module, args, final=True)
    result = module.run(ModuleContext(conn=conn, host=target.name, variables=target.variables), validated)
    if result.failed and not result.facts:
        raise GlmopsError(f"{target.name}: {result.msg}")
    return dict(result.facts), (result.msg if result.failed else None)


def _fact_text(key: str, value: Any, facts: dict[str, Any]) -> str:
    if key == "glmops_gpus":
        if not value:
            return "none" + (f" ({facts['glmops_nvidia_smi_error']})" if facts.get("glmops_nvidia_smi_error") else "")
        return "; ".join(f"{g['name']}: {_gb(g['memory_free_mb'])} of {_gb(g['memory_total_mb'])} GB free" for g in value)
    if key.endswith("_mb"):
        return "-" if value is None else f"{_gb(value)} GB" + (f" at {facts.get('glmops_disk_path')}" if "disk" in key else "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


@click.command(context_settings=CONTEXT)
@click.argument("host", shell_complete=complete_hosts)
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object per host.")
def facts(host: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, as_json: bool) -> None:
    """The facts a deploy uses on HOST (GPUs, VRAM, driver, CUDA, RAM, disk, AutoDL) and the profile it would choose."""

    def body() -> int:
        code = 0
        out: list[dict[str, Any]] = []
        for target in load_targets(host, inventories, extra_vars):
            with connected(target, accept_new) as conn:
                found, refusal = gather_facts(conn, target)
            if refusal:
                found["glmops_profile"] = None
                found["glmops_profile_reason"] = refusal
                code = EXIT_HOST_FAILED
            out.append({"host": target.name, **found})
            if not as_json:
                click.echo(f"{target.name}:")
                for key, label in FACT_LABELS:
                    click.echo(f"  {label + ':':<15}{_fact_text(key, found.get(key), found)}")
        if as_json:
            click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return code

    run_command(body, as_json=as_json)
