"""`glmops run`: load a playbook and an inventory, validate everything, then run."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from glmops.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_LOAD_ERROR, GlmopsError, LoadError, Pos

EPILOG = """\b
Exit codes:
  0   every host ok
  1   any other error (bad command line, internal error)
  2   a task failed on at least one host
  3   the playbook, a role, a vars file or the inventory did not load; nothing ran
  4   at least one host was unreachable
  99  interrupted
"""


def parse_extra_vars(values: tuple[str, ...]) -> dict[str, Any]:
    """-e k=v k2=v2 | -e @file.yml | -e '{"json": 1}' -> one dict (later ones win)."""
    from glmops.playbook.loader import load_vars_file

    merged: dict[str, Any] = {}
    for value in values:
        value = value.strip()
        if value.startswith("@"):
            merged.update(load_vars_file(value[1:], Pos(value[1:])))
        elif value.startswith("{"):
            try:
                data = json.loads(value)
            except json.JSONDecodeError as exc:
                raise LoadError(f"-e {value!r}: not valid JSON: {exc}", field="-e") from None
            merged.update(data)
        else:
            import shlex

            for token in shlex.split(value):
                key, sep, val = token.partition("=")
                if not sep or not key.isidentifier():
                    raise LoadError(f"-e {token!r}: expected NAME=VALUE, @FILE or JSON", field="-e", hint="e.g. -e model_dir=/root/autodl-tmp")
                merged[key] = val
    return merged


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("playbook", metavar="PLAYBOOK")
@click.option("-i", "--inventory", "inventories", multiple=True, help="Inventory file, directory, or 'host1,host2,' list (repeatable).")
@click.option("-l", "--limit", help="Run only on hosts matching this pattern.")
@click.option("-C", "--check", is_flag=True, help="Change nothing; report what would change.")
@click.option("-D", "--diff", is_flag=True, help="Show what changes in files (unified diffs).")
@click.option("-t", "--tags", multiple=True, help="Run only tasks with these tags (comma-separated, repeatable).")
@click.option("--skip-tags", multiple=True, help="Skip tasks with these tags.")
@click.option("-e", "--extra-vars", multiple=True, help="Variables: NAME=VALUE, @file.yml, or JSON (highest precedence).")
@click.option("-f", "--forks", default=10, show_default=True, type=click.IntRange(1, 500), help="Hosts worked on at once.")
@click.option("--roles-path", "roles_path", multiple=True, metavar="DIR",
              help="Also look for roles here, after the playbook's roles/ and ./roles/ (repeatable, or DIR1:DIR2; "
                   "GLMOPS_ROLES_PATH / ANSIBLE_ROLES_PATH are searched next).")
@click.option("--start-at-task", help="Skip the tasks before the first task with this name.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record the key of a host seen for the first time (a changed key is always refused).")
@click.option("-k", "--ask-pass", is_flag=True, help="Ask for the SSH password (for hosts without ansible_password); read from stdin when it is not a terminal.")
@click.option("-K", "--ask-become-pass", is_flag=True, help="Ask for the sudo password used by become (empty: the SSH password).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event per line, and nothing else, on stdout.")
@click.option("-v", "--verbose", count=True, help="More output: -v results, -vv full results, -vvv tracebacks.")
def run(playbook: str, inventories: tuple[str, ...], limit: str | None, check: bool, diff: bool, tags: tuple[str, ...],
        skip_tags: tuple[str, ...], extra_vars: tuple[str, ...], forks: int, roles_path: tuple[str, ...], start_at_task: str | None,
        accept_new_host_keys: bool, ask_pass: bool, ask_become_pass: bool, as_json: bool, verbose: int) -> None:
    """Run PLAYBOOK against the hosts of the inventory.

    PLAYBOOK is a file, or the name of a playbook shipped with glmops (`autodl`, `local`, `cpu`, ...;
    `glmops init` writes editable copies). A file of that name in the current folder wins.

    \b
    Everything is loaded and checked first (playbook, roles, vars files, inventory, host
    patterns): if anything is wrong, nothing runs on any host.
    """
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    try:
        from glmops.commands.prompts import ask_passwords

        passwords = ask_passwords(ask_pass, ask_become_pass)
        code = _run(playbook, inventories, limit, check, diff, tags, skip_tags, extra_vars, forks, start_at_task,
                    accept_new_host_keys, as_json, verbose, passwords, roles_path)
    except GlmopsError as exc:
        if verbose >= 3:
            err.print(traceback.format_exc(), markup=False)
        _print_error(err, exc, as_json)
        code = exc.exit_code
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for users
        if verbose >= 3:
            err.print(traceback.format_exc(), markup=False)
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {exc}  (run with -vvv for the traceback)", markup=True)
        code = EXIT_ERROR
    sys.exit(code)


def _print_error(err: Any, exc: GlmopsError, as_json: bool) -> None:
    from rich.markup import escape

    kind = "ERROR (nothing ran)" if exc.exit_code == EXIT_LOAD_ERROR else "ERROR"
    err.print(f"[bold red]{kind}[/]: {escape(str(exc))}")
    if as_json:
        print(json.dumps({"event": "error", "message": exc.message, "pos": str(exc.pos) if exc.pos else None,
                          "field": exc.field, "hint": exc.hint, "exit_code": exc.exit_code}))


def _run(playbook_path: str, inventories: tuple[str, ...], limit: str | None, check: bool, diff: bool, tags: tuple[str, ...],
         skip_tags: tuple[str, ...], extra_vars: tuple[str, ...], forks: int, start_at_task: str | None,
         accept_new: bool, as_json: bool, verbose: int, passwords: tuple[str | None, str | None] = (None, None),
         roles_path: tuple[str, ...] = ()) -> int:
    from glmops.executor.runner import PlaybookRunner, RunOptions
    from glmops.inventory import load_inventory
    from glmops.playbook.loader import load_playbook

    if not inventories and os.environ.get("GLMOPS_INVENTORY"):
        inventories = (os.environ["GLMOPS_INVENTORY"],)
    inventory = load_inventory(list(inventories))
    roles_dirs = [os.path.abspath(d) for value in roles_path for d in value.split(os.pathsep) if d]
    book = load_playbook(str(_playbook_file(playbook_path)), extra_roles_paths=roles_dirs)
    options = RunOptions(
        check=check, diff=diff, forks=forks, limit=limit, tags=list(tags), skip_tags=list(skip_tags),
        extra_vars=parse_extra_vars(extra_vars), start_at_task=start_at_task, roles_path=roles_dirs,
        host_key_checking="accept-new" if accept_new else None, verbosity=verbose,
        password=passwords[0], become_password=passwords[1],
    )
    if as_json:
        from glmops.output.jsonlines import JsonLinesRenderer

        renderer: Any = JsonLinesRenderer()
    else:
        from glmops.output.console import ConsoleRenderer

        renderer = ConsoleRenderer(verbosity=verbose, diff=diff)
    runner = PlaybookRunner(book, inventory, options, renderer)
    with _interrupt_handler(runner, as_json):
        return runner.run()


def _playbook_file(argument: str) -> Path:
    """The playbook file for PLAYBOOK: a path, or a shipped playbook's name (glmops/shipped.py)."""
    from glmops.shipped import resolve_playbook, unknown_playbook_hint

    path = resolve_playbook(argument)
    if not path.is_file():
        what = " (a folder)" if path.is_dir() else ""
        raise LoadError(f"playbook not found: {argument}{what}", field="PLAYBOOK", hint=unknown_playbook_hint())
    return path


@contextmanager
def _interrupt_handler(runner: Any, as_json: bool) -> Iterator[None]:
    """Ctrl-C: the first stops the run (the remote commands it started, then the recap, exit 99);
    a second one exits at once."""
    import signal
    import threading

    def stop() -> None:
        if as_json:
            sys.stderr.write(f"interrupted: stopping {runner.stopping()} (killing the commands it started)\n")
            sys.stderr.flush()
        runner.interrupt()

    def on_sigint(signum: int, frame: Any) -> None:
        if runner.interrupted:
            os.write(2, b"interrupted again: exiting now\n")
            os._exit(EXIT_INTERRUPTED)
        # The handler runs on the main thread, which may hold the output lock: work elsewhere.
        threading.Thread(target=stop, name="glmops-interrupt", daemon=True).start()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
