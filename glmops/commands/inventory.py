"""`glmops inventory add|list`: turn an `ssh -p PORT user@host` login line into a host entry; list hosts."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import click

from glmops.errors import GlmopsError, LoadError

DEFAULT_INVENTORY = "inventory/hosts.yml"


@dataclass
class LoginLine:
    user: str | None
    host: str
    port: int | None
    key: str | None
    ignored: list[str]


def parse_login(words: list[str]) -> LoginLine:
    """Parse what AutoDL (and others) show: `ssh -p 12345 root@region-9.autodl.com`, in any order."""
    if words and words[0] in ("ssh", "/usr/bin/ssh"):
        words = words[1:]
    if len(words) == 1 and " " in words[0]:
        import shlex

        words = shlex.split(words[0])
        if words and words[0] == "ssh":
            words = words[1:]
    user = host = key = None
    port: int | None = None
    ignored: list[str] = []
    index = 0
    takes_value = set("bcDEeFIiJLlmOoPpQRSWw")
    while index < len(words):
        word = words[index]
        if word.startswith("-") and len(word) >= 2 and word[1] in takes_value:
            value = word[2:] or (words[index + 1] if index + 1 < len(words) else None)
            if value is None:
                raise GlmopsError(f"option {word} needs a value")
            index += 1 if word[2:] else 2
            if word[1] == "p":
                port = _port(value)
            elif word[1] == "i":
                key = value
            elif word[1] == "l":
                user = value
            else:
                ignored.append(f"{word[:2]} {value}")
            continue
        if word.startswith("-"):
            ignored.append(word)
            index += 1
            continue
        if host is not None:
            raise GlmopsError(f"unexpected word {word!r}: only an ssh login line is expected (ssh -p PORT user@host)")
        target = word
        if target.startswith("ssh://"):
            target = target[len("ssh://") :]
            if ":" in target.rsplit("@", 1)[-1]:
                target, _, port_text = target.rpartition(":")
                port = _port(port_text)
        if "@" in target:
            user, _, target = target.rpartition("@")
        host = target
        index += 1
    if not host:
        raise GlmopsError("no host in the login line", hint="paste it as shown, e.g.: -- ssh -p 12345 root@region-9.autodl.com")
    return LoginLine(user, host, port, key, ignored)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise GlmopsError(f"invalid port {text!r}")
    return int(text)


def _secret_safe(variables: dict[str, Any]) -> dict[str, Any]:
    from glmops.output.redact import MASK, is_secret_name

    return {k: (MASK if is_secret_name(k) and v not in (None, "") else v) for k, v in variables.items()}


def add_host(path: str, name: str, group: str | None, entry: dict[str, Any]) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """Add or update `name` in the YAML inventory at `path`, keeping comments and order.

    Returns ('added' | 'updated' | 'unchanged', {var: (old, new)}).
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            try:
                data = yaml.load(handle)
            except Exception as exc:  # noqa: BLE001 - ruamel raises many kinds
                raise LoadError(f"cannot parse the inventory: {exc}", hint="fix the YAML, or give another file with -i") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise LoadError(f"{path}: the inventory must be a mapping of groups")
    root = data.setdefault("all", CommentedMap())
    if root is None:
        root = data["all"] = CommentedMap()
    container = root
    if group and group != "all":
        children = root.setdefault("children", CommentedMap())
        if children is None:
            children = root["children"] = CommentedMap()
        container = children.setdefault(group, CommentedMap())
        if container is None:
            container = children[group] = CommentedMap()
    hosts = container.setdefault("hosts", CommentedMap())
    if hosts is None:
        hosts = container["hosts"] = CommentedMap()
    current = hosts.get(name)
    changes: dict[str, tuple[Any, Any]] = {}
    if current is None:
        hosts[name] = CommentedMap(entry)
        status = "added"
        changes = {k: (None, v) for k, v in entry.items()}
    else:
        for key, value in entry.items():
            if current.get(key) != value:
                changes[key] = (current.get(key), value)
                current[key] = value
        status = "updated" if changes else "unchanged"
    if status != "unchanged":
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".inventory-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                yaml.dump(data, handle)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return status, changes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def inventory() -> None:
    """Manage the inventory: add a host from its ssh login line, list hosts."""


@inventory.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("login", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-g", "--group", help="Put the host into this group (created when missing).")
@click.option("-i", "--inventory", "path", default=DEFAULT_INVENTORY, show_default=True, help="The inventory file to change.")
@click.option("--key", help="Private key file for this host (ansible_ssh_private_key_file).")
def add(name: str, login: tuple[str, ...], group: str | None, path: str, key: str | None) -> None:
    """Add host NAME from the login line that AutoDL shows.

    \b
      glmops inventory add autodl --group gpu -- ssh -p 12345 root@region-9.autodl.com
    """
    try:
        parsed = parse_login(list(login))
        entry: dict[str, Any] = {"ansible_host": parsed.host}
        if parsed.port:
            entry["ansible_port"] = parsed.port
        if parsed.user:
            entry["ansible_user"] = parsed.user
        if key or parsed.key:
            entry["ansible_ssh_private_key_file"] = key or parsed.key
        status, changes = add_host(path, name, group, entry)
    except GlmopsError as exc:
        click.secho(f"ERROR: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    from glmops.output.redact import is_secret_name

    for option in parsed.ignored:
        click.echo(f"note: ignored ssh option {option}", err=True)
    if status == "unchanged":
        click.echo(f"{name} is already in {path} with these settings; nothing changed")
        return
    click.echo(f"{status} {name} in {path}" + (f" (group {group})" if group else ""))
    for var, (old, new) in changes.items():
        shown = ("********", "********") if is_secret_name(var) else (old, new)
        click.echo(f"  {var}: {'(none)' if shown[0] is None else shown[0]} -> {shown[1]}")


@inventory.command("list")
@click.option("-i", "--inventory", "sources", multiple=True, help="Inventory file(s) (default inventory/hosts.yml).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_hosts(sources: tuple[str, ...], as_json: bool) -> None:
    """List hosts with their groups and connection settings (secrets hidden)."""
    from glmops.inventory import load_inventory

    try:
        inv = load_inventory(list(sources) or [DEFAULT_INVENTORY])
    except GlmopsError as exc:
        click.secho(f"ERROR: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    rows = []
    for host in inv.hosts:
        variables = _secret_safe(inv.host_vars(host))
        rows.append({
            "host": host,
            "groups": inv.group_names(host),
            "connection": variables.get("ansible_connection", "ssh"),
            "address": variables.get("ansible_host", host),
            "port": variables.get("ansible_port", 22 if variables.get("ansible_connection", "ssh") == "ssh" else None),
            "user": variables.get("ansible_user"),
            "key": variables.get("ansible_ssh_private_key_file"),
            "vars": variables,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    for column in ("host", "groups", "connection", "address", "port", "user", "key"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(", ".join(row[c]) if isinstance(row[c], list) else ("" if row[c] is None else str(row[c])) for c in
                        ("host", "groups", "connection", "address", "port", "user", "key")))
    Console().print(table)
