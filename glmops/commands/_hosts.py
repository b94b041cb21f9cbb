"""What the day-2 commands share: the hosts of a pattern with their variables and layout, a
connection per host (the same code `glmops run` uses), errors printed without tracebacks."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from glmops.connection.base import Become
from glmops.userconfig import default_inventories
from glmops.errors import EXIT_ERROR, EXIT_INTERRUPTED, GlmopsError
from glmops.layout import Layout

T = TypeVar("T")
CONNECTION_VARS = ("ansible_host", "ansible_port", "ansible_user", "ansible_connection", "ansible_password",
                   "ansible_ssh_private_key_file", "glmops_known_hosts", "host_key_checking")
LAYOUT_VARS = ("deploy_dir", "api_host", "api_port")


@dataclass
class Target:
    """One inventory host as the day-2 commands see it."""

    name: str
    variables: dict[str, Any]  # inventory variables, -e on top; the ones used are rendered
    layout: Layout
    become: Become | None = None  # run the commands on the host as this user (sudo), as the deploy did

    def var(self, name: str, default: Any = None) -> Any:
        value = self.variables.get(name)
        return default if value is None else value


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"glmops.{param.name}"] = value
    return value


def inventory_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """-i/--inventory, -e/--extra-vars, --accept-new-host-keys, -k/--ask-pass, -K/--ask-become-pass, -b/--become,
    --become-user, as `glmops run` has them."""
    func = click.option("-K", "--ask-become-pass", is_flag=True, expose_value=False, callback=_remember,
                        help="Ask for the sudo password used by become (empty: the SSH password).")(func)
    func = click.option("-k", "--ask-pass", is_flag=True, expose_value=False, callback=_remember,
                        help="Ask for the SSH password (for hosts without ansible_password); read from stdin when it is not a terminal.")(func)
    func = click.option("--become-user", expose_value=False, callback=_remember,
                        help="With --become: the user (default root, or the host's ansible_become_user).")(func)
    func = click.option("-b", "--become", is_flag=True, expose_value=False, callback=_remember,
                        help="Run the commands on the host with sudo (when the deploy ran with become).")(func)
    func = click.option("--accept-new-host-keys", "accept_new", is_flag=True,
                        help="Record the key of a host seen for the first time.")(func)
    func = click.option("-e", "--extra-vars", multiple=True,
                        help="Variables (deploy_dir, api_port, ...): NAME=VALUE, @file.yml or JSON.")(func)
    func = click.option("-i", "--inventory", "inventories", multiple=True,
                        help="Inventory file, directory, or 'host1,host2,' list (repeatable; default $GLMOPS_INVENTORY, else "
                             "./inventory/hosts.yml and ~/.config/glmops/inventory.yml, those that exist).")(func)
    return func


def load_targets(pattern: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...] = (), *, single: bool = False) -> list[Target]:
    """The hosts matching `pattern`, with rendered layout and connection variables."""
    from glmops.commands.run import parse_extra_vars
    from glmops.inventory import load_inventory
    from glmops.playbook.templating import Templar

    inventory = load_inventory(list(inventories) or default_inventories())
    extra = parse_extra_vars(extra_vars)
    names = inventory.select(pattern)
    implicit = not names and ssh_config_alias(pattern)
    if implicit:
        names = [pattern]
    if not names:
        known = ", ".join(sorted(inventory.hosts)[:10]) or "none"
        raise GlmopsError(f"no host matches {pattern!r}", field="HOST",
                          hint=f"hosts in the inventory: {known}" + ("" if inventories else "; give the inventory with -i"))
    if single and len(names) > 1:
        raise GlmopsError(f"{pattern!r} matches {len(names)} hosts ({', '.join(names[:5])}); this command works on one",
                          field="HOST", hint="name one host")
    templar = Templar()
    password, become_password = _passwords()
    targets = []
    for name in names:
        inventory_vars = {} if implicit else inventory.host_vars(name)
        variables = {**inventory_vars, **extra, "inventory_hostname": name}
        for key in CONNECTION_VARS + LAYOUT_VARS + ("ansible_become", "ansible_become_user", "api_keys", "profile", "network_turbo_path", "embedding_model",
                                                    "served_model_name", "model_path"):
            if key in variables:
                variables[key] = templar.render(variables[key], variables, field=f"{name}: {key}")
        try:
            layout = Layout.from_hostvars(variables)
        except (TypeError, ValueError):
            raise GlmopsError(f"host {name}: api_port must be a number, got {variables.get('api_port')!r}", field="api_port") from None
        if password is not None:  # typed at the prompt: never templated
            variables.setdefault("ansible_password", password)
        if become_password is not None and "ansible_become_pass" not in variables:
            variables.setdefault("ansible_become_password", become_password)
        targets.append(Target(name, variables, layout, _become_of(variables)))
    return targets


def ssh_config_alias(pattern: str) -> bool:
    """Whether `pattern` is a plain name given as a Host alias in ~/.ssh/config (or $GLMOPS_SSH_CONFIG): such a
    host needs no inventory entry, as `ssh ALIAS` needs none."""
    from glmops.connection.sshopts import config_aliases, ssh_config_path

    if not pattern or any(c in pattern for c in ",:*?[]~!&"):
        return False
    return pattern in config_aliases(ssh_config_path({}))


def _passwords() -> tuple[str | None, str | None]:
    """-k/-K: asked once per command (a command may load its hosts twice), only when a host is about to be used."""
    from glmops.commands.prompts import ask_passwords

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None, None
    if "glmops.passwords" not in ctx.meta:
        ctx.meta["glmops.passwords"] = ask_passwords(bool(ctx.meta.get("glmops.ask_pass")), bool(ctx.meta.get("glmops.ask_become_pass")))
    return ctx.meta["glmops.passwords"]


def _become_of(variables: dict[str, Any]) -> Become | None:
    """-b/--become-user from the command line, else the host's ansible_become / ansible_become_user."""
    from glmops.modules.base import coerce

    meta = click.get_current_context(silent=True).meta if click.get_current_context(silent=True) else {}
    wanted = bool(meta.get("glmops.become"))
    if not wanted and variables.get("ansible_become") is not None:
        wanted = bool(coerce(variables["ansible_become"], "bool", name="ansible_become"))
    if not wanted:
        return None
    return Become(user=str(meta.get("glmops.become_user") or variables.get("ansible_become_user") or "root"))


class _BecomeConnection:
    """A connection whose commands run with the target's become unless a call names its own."""

    def __init__(self, conn: Any, become: Become):
        self._conn, self._become = conn, become

    def run(self, cmd: str, **kwargs: Any) -> Any:
        if kwargs.get("become") is None:
            kwargs["become"] = self._become
        return self._conn.run(cmd, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def connect(target: Target, accept_new: bool = False) -> Any:
    """An open connection to the host (raises ConnectionFailure when it cannot be reached)."""
    from glmops.connection.factory import open_connection

    conn = open_connection(target.name, target.variables, host_key_checking="accept-new" if accept_new else None)
    conn.connect()
    return _BecomeConnection(conn, target.become) if target.become else conn


@contextmanager
def connected(target: Target, accept_new: bool = False) -> Iterator[Any]:
    conn = connect(target, accept_new)
    try:
        yield conn
    finally:
        conn.close()


def run_command(body: Callable[[], int], *, as_json: bool = False) -> None:
    """Run a command body and exit with its code; user errors print without a traceback."""
    try:
        code = body()
    except GlmopsError as exc:
        if as_json:
            import json

            click.echo(json.dumps({"error": exc.message, "field": exc.field, "hint": exc.hint, "exit_code": exc.exit_code}))
        click.secho(f"ERROR: {exc}", fg="red", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for users
        if os.environ.get("GLMOPS_DEBUG"):
            traceback.print_exc()
        click.secho(f"internal error: {type(exc).__name__}: {exc} (GLMOPS_DEBUG=1 for the traceback)", fg="red", err=True)
        code = EXIT_ERROR
    sys.exit(code)


def for_each(targets: list[Target], work: Callable[[Target], T], forks: int = 10) -> list[T]:
    """`work` on every target at once (threads), results in the targets' order."""
    if len(targets) == 1:
        return [work(targets[0])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(forks, len(targets))) as pool:
        return list(pool.map(work, targets))
