"""`glmops inventory add|list`: turn an `ssh -p PORT user@host` login line into a host entry; list hosts."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import click

from glmops.errors import ArgumentError, GlmopsError, LoadError, Pos
from glmops.userconfig import DEFAULT_INVENTORY

MASK = "********"
NEW_FILE_HEADER = "# glmops inventory (Ansible's YAML format); see docs/inventory.md\n"
# ssh options that take a value (from ssh(1)); -p, -i, -l are read, the others ignored with a note
SSH_VALUE_OPTIONS = set("BbcDEeFIiJLlmOoPpQRSWw")
SSH_ONLY_FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
SECRET_WORDS = re.compile(r"pass(word|wd)?|secret|token|api_?key", re.I)


@dataclass
class LoginLine:
    """What an ssh login line says: where to connect and as whom."""

    user: str | None
    host: str
    port: int | None
    key: str | None
    ignored: list[str] = field(default_factory=list)


def parse_login(words: list[str]) -> LoginLine:
    """Parse a login line as AutoDL (and others) show it: `ssh -p 12345 root@region-9.autodl.com`,
    options before or after the destination, `-i KEY`, `-l USER`, or `ssh://user@host:port`.
    A line pasted as one quoted argument is split as a shell would."""
    if len(words) == 1 and any(c.isspace() for c in words[0]):
        try:
            words = shlex.split(words[0])
        except ValueError as exc:
            raise ArgumentError(f"cannot split the login line: {exc}", hint="paste the line as shown, e.g. -- ssh -p 12345 root@host") from None
    if words and os.path.basename(words[0]) == "ssh":
        words = words[1:]
    user = host = key = None
    port: int | None = None
    ignored: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("-") and len(word) >= 2:
            flags = word[1:]
            # combined flags such as -CNg, possibly ending in one that takes a value: -Np 2222
            while flags and flags[0] in SSH_ONLY_FLAGS:
                flags = flags[1:]
            if not flags:
                ignored.append(word)
                continue
            letter, value = flags[0], flags[1:]
            if letter not in SSH_VALUE_OPTIONS:
                raise ArgumentError(f"unknown ssh option {word!r} in the login line", hint="paste the line as shown, e.g. -- ssh -p 12345 root@host")
            if not value:
                if index >= len(words):
                    raise ArgumentError(f"ssh option -{letter} needs a value", hint="e.g. -- ssh -p 12345 root@host")
                value = words[index]
                index += 1
            if letter == "p":
                port = _port(value)
            elif letter == "i":
                key = value
            elif letter == "l":
                user = value
            else:
                ignored.append(f"-{letter} {value}")
            continue
        if host is not None:
            raise ArgumentError(f"unexpected word {word!r} after the host: only a login line is expected (no remote command)",
                                hint="e.g. -- ssh -p 12345 root@region-9.autodl.com")
        target = word
        if target.startswith("ssh://"):
            target = target[len("ssh://") :].rstrip("/")
            if ":" in target.rsplit("@", 1)[-1]:
                target, _, port_text = target.rpartition(":")
                port = _port(port_text)
        if "@" in target:
            user, _, target = target.rpartition("@")
            if not user:
                raise ArgumentError(f"empty user name in {word!r}", hint="write user@host, e.g. root@region-9.autodl.com")
        host = target
    if not host:
        raise ArgumentError("no host in the login line", hint="paste it as shown, e.g.: -- ssh -p 12345 root@region-9.autodl.com")
    return LoginLine(user, host, port, key, ignored)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ArgumentError(f"invalid port {text!r}", hint="a port is a number from 1 to 65535, e.g. -p 12345")
    return int(text)


def is_secret_name(name: Any) -> bool:
    """Names whose values are never shown: password, passwd, secret, token, api_key (any case)."""
    try:
        from glmops.output.redact import is_secret_name as shared
    except ImportError:  # pragma: no cover - output package is part of glmops
        return bool(SECRET_WORDS.search(str(name)))
    return shared(str(name)) or bool(SECRET_WORDS.search(str(name)))


def redact(value: Any, name: Any = "") -> Any:
    """A copy of `value` with the values of secret-looking names masked, at any depth."""
    if is_secret_name(name) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# -- editing the file --------------------------------------------------------------------------
def _groups_in(data: Any) -> list[tuple[str, Any, Any]]:
    """(name, node, container) for every group node in the file, depth first, in file order."""
    out: list[tuple[str, Any, Any]] = []

    def walk(name: str, node: Any, container: Any) -> None:
        out.append((name, node, container))
        if isinstance(node, dict) and isinstance(node.get("children"), dict):
            for child, child_node in node["children"].items():
                walk(str(child), child_node, node["children"])

    for name, node in data.items():
        walk(str(name), node, data)
    return out


def _mapping(container: Any, key: str) -> Any:
    """container[key] as a mapping, created (or turned from empty into a mapping) when needed."""
    from ruamel.yaml.comments import CommentedMap

    if container.get(key) is None:
        container[key] = CommentedMap()
    return container[key]


def _same(old: Any, new: Any) -> bool:
    return old is not None and str(old) == str(new)


def add_host(path: str, name: str, group: str | None, entry: dict[str, Any], remove: tuple[str, ...] = ()) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """Add or update host `name` in the YAML inventory at `path`, keeping comments and order.

    The host is updated where it is already defined (in any group); a new host goes under `group`
    (created under all.children when missing) or under all.hosts. Variables in `remove` are deleted.
    Returns ('added' | 'updated' | 'unchanged', {var: (old, new)}); None stands for "not set".
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from glmops.inventory import Inventory, _load_file

    existing = os.path.exists(path)
    if existing:
        if os.path.isdir(path):
            raise LoadError("is a directory; give the inventory file to change", pos=Pos(path), field="-i",
                            hint="e.g. -i inventory/hosts.yml")
        _load_file(Inventory(), path)  # any error in the file, with its line and column
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = None
    if existing:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle)
    if data is None:
        data = CommentedMap()
    group = None if group in (None, "", "all", "ungrouped") else group
    groups = _groups_in(data)
    places = [(g, node) for g, node, _ in groups if isinstance(node, dict) and isinstance(node.get("hosts"), dict) and name in node["hosts"]]
    status = "unchanged"
    changes: dict[str, tuple[Any, Any]] = {}
    if places:
        # update the definition that holds the connection settings (or the first one)
        _, node = next(((g, n) for g, n in places if isinstance(n["hosts"][name], dict) and "ansible_host" in n["hosts"][name]), places[0])
        current = node["hosts"][name]
        if current is None:
            current = node["hosts"][name] = CommentedMap()
        for key, value in entry.items():
            if not _same(current.get(key), value):
                changes[key] = (current.get(key), value)
                current[key] = value
        for key in remove:
            if key in current:
                changes[key] = (current.pop(key), None)
        status = "updated" if changes else "unchanged"
    if group and not any(g == group for g, _ in places):
        node = next((n for g, n, _ in groups if g == group), None)
        if node is None and not any(g == group for g, _, _ in groups):
            node = _mapping(_mapping(_mapping(data, "all"), "children"), group)
        elif node is None:  # `group:` written empty
            container = next(c for g, _, c in groups if g == group)
            node = _mapping(container, group)
        hosts = _mapping(node, "hosts")
        if places:
            hosts[name] = None  # membership only: the settings stay where they are
            changes.setdefault("group", (None, group))
            status = "updated"
        else:
            hosts[name] = CommentedMap(entry)
            status = "added"
    elif not places:
        _mapping(_mapping(data, "all"), "hosts")[name] = CommentedMap(entry)
        status = "added"
    if status == "added":
        changes = {k: (None, v) for k, v in entry.items()}
    if status != "unchanged":
        _write_atomic(path, yaml, data, header=not existing, private="ansible_password" in entry)
    return status, changes


def _write_atomic(path: str, yaml: Any, data: Any, *, header: bool, private: bool) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` (keeping its mode)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    if private:
        mode &= 0o600
    fd, tmp = tempfile.mkstemp(prefix=".inventory-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if header:
                handle.write(NEW_FILE_HEADER)
            yaml.dump(data, handle)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_password(login: LoginLine) -> str:
    """The SSH password: asked without echo on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        password = click.prompt(f"SSH password for {login.user + '@' if login.user else ''}{login.host}", hide_input=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ArgumentError("empty password", field="--password-prompt / --copy-id", hint="type the password that the provider shows, or use a key")
    return password


# -- the commands ------------------------------------------------------------------------------
def _fail(exc: GlmopsError) -> None:
    click.secho(f"ERROR: {exc}", fg="red", err=True)
    sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def inventory() -> None:
    """Manage the inventory: add a host from its ssh login line, list hosts."""


@inventory.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("login", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-g", "--group", help="Put the host into this group (created when missing).")
@click.option("-i", "--inventory", "path", default=DEFAULT_INVENTORY, show_default=True, help="The inventory file to change (created when missing).")
@click.option("--key", help="Private key file for this host (ansible_ssh_private_key_file).")
@click.option("--password-prompt", is_flag=True, help="Ask for the SSH password and store it as ansible_password (file made private); a key is better.")
@click.option("--copy-id", is_flag=True, help="Log in once with the password (asked, or one line of stdin) and install your public key "
              "(--key's .pub, else ~/.ssh/id_ed25519.pub or id_rsa.pub), so later runs need no password.")
@click.option("--accept-new-host-keys", is_flag=True, help="With --copy-id: record the host's key if it is seen for the first time.")
def add(name: str, login: tuple[str, ...], group: str | None, path: str, key: str | None, password_prompt: bool,
        copy_id: bool, accept_new_host_keys: bool) -> None:
    """Add host NAME from the login line that AutoDL shows (paste it after --).

    \b
      glmops inventory add autodl --group gpu -- ssh -p 12345 root@region-9.autodl.com
    """
    try:
        if not _NAME.match(name) or name in ("all", "ungrouped"):
            raise ArgumentError(f"invalid host name {name!r}", field="NAME",
                                hint="a short name of letters, digits, '-', '_' or '.', e.g. autodl-3090 (not 'all' or 'ungrouped')")
        if group and not _GROUP.match(group):
            raise ArgumentError(f"invalid group name {group!r}", field="--group",
                                hint="letters, digits, '_', '-' or '.', starting with a letter, e.g. gpu")
        parsed = parse_login(list(login))
        entry: dict[str, Any] = {"ansible_host": parsed.host}
        remove: list[str] = []
        for var, value in (("ansible_port", parsed.port), ("ansible_user", parsed.user)):
            if value is None:
                remove.append(var)  # the login line is the whole truth: no -p means port 22
            else:
                entry[var] = value
        if key or parsed.key:
            entry["ansible_ssh_private_key_file"] = key or parsed.key
        password = _read_password(parsed) if password_prompt or copy_id else None
        if password_prompt:
            entry["ansible_password"] = password
        copied = None
        if copy_id:
            from glmops.connection.copyid import copy_id as install_key, find_public_key

            public_key = find_public_key(key or parsed.key)
            copied = (public_key, install_key(name, entry, password or "", public_key,
                                              host_key_checking="accept-new" if accept_new_host_keys else None))
        status, changes = add_host(path, name, group, entry, tuple(remove))
    except GlmopsError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(GlmopsError(f"cannot write the inventory: {exc.strerror or exc}", pos=Pos(path)))
    for option in parsed.ignored:
        click.echo(f"note: ignored ssh option {option} (glmops connects with its own SSH client)", err=True)
    if copied is not None:
        public_key, how = copied
        click.echo(f"{public_key} {'installed on' if how == 'added' else 'was already installed on'} {name}; "
                   "logging in with the key works, no password needed from now on")
    if status == "unchanged":
        click.echo(f"{name} is already in {path} with these settings; nothing changed")
        return
    click.echo(f"{status} {name} in {path}" + (f" (group {group})" if group else ""))
    for var, (old, new) in changes.items():
        if is_secret_name(var):
            old, new = (None if old is None else MASK), (None if new is None else MASK)
        click.echo(f"  {var}: {'(not set)' if old is None else old} -> {'(removed)' if new is None else new}")
    if not group:
        _note_no_group(path, name, list(login))
    if status == "added":
        click.echo(f"next: glmops inventory list -i {path}")


_TARGET_GROUP = re.compile(r"""hosts:\s*["']?\{\{\s*target\s*\|\s*default\(\s*['"]([A-Za-z0-9_.-]+)['"]\s*\)""")


def playbook_groups() -> dict[str, str]:
    """{playbook name: the group its deploy play targets} of the shipped playbooks
    (`hosts: "{{ target | default('autodl') }}"`)."""
    from glmops.shipped import shipped_playbooks

    found = {}
    for name, path in shipped_playbooks().items():
        match = _TARGET_GROUP.search(path.read_text(encoding="utf-8"))
        if match:
            found[name] = match.group(1)
    return found


def _note_no_group(path: str, name: str, login: list[str]) -> None:
    """Added without --group: when the host is in no group, say which playbook group it is not in
    (the shipped playbooks deploy to a group, so such a host is deployed to by none)."""
    from glmops.inventory import load_inventory

    try:
        if load_inventory([path]).group_names(name):
            return
        groups = playbook_groups()
    except (GlmopsError, OSError):
        return
    if not groups:
        return
    stem = os.path.splitext(os.path.basename(path))[0]
    group = groups.get(stem) or next(iter(groups.values()))
    listing = ", ".join(f"{book}.yml: {g}" for book, g in groups.items())
    click.echo(f"note: {name} is in no group, and each shipped playbook deploys to its group ({listing}), so none of them "
               f"reaches {name}. Put it into its playbook's group: glmops inventory add {name} --group {group} -i {shlex.quote(path)} "
               f"-- {shlex.join(login)}   (or run the playbook with -e target={name})", err=True)


@inventory.command("list")
@click.argument("pattern", default="all")
@click.option("-i", "--inventory", "sources", multiple=True, help=f"Inventory file, directory or 'h1,h2,' list; repeatable (default {DEFAULT_INVENTORY}).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: every host with its groups and all its inventory variables.")
def list_hosts(pattern: str, sources: tuple[str, ...], as_json: bool) -> None:
    """List the hosts matching PATTERN (default: all) with their groups and connection settings.

    Passwords and other secret-looking variables are shown as ********.
    """
    from glmops.inventory import load_inventory

    try:
        inv = load_inventory(list(sources) or [DEFAULT_INVENTORY])
        names = inv.select(pattern)
    except GlmopsError as exc:
        _fail(exc)
    rows = []
    for host in names:
        variables = redact(inv.host_vars(host))
        connection = variables.get("ansible_connection", "local" if host in ("localhost", "127.0.0.1", "::1") and host in inv.implicit else "ssh")
        rows.append({
            "host": host,
            "groups": inv.group_names(host),
            "connection": connection,
            "address": variables.get("ansible_host", host),
            "port": variables.get("ansible_port", 22 if connection == "ssh" else None),
            "user": variables.get("ansible_user"),
            "key": variables.get("ansible_ssh_private_key_file"),
            "password": variables.get("ansible_password"),
            "vars": variables,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    if not rows:
        click.echo(f"no host matches '{pattern}' in {', '.join(inv.sources) or 'the inventory'}", err=True)
        sys.exit(1)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for column in ("host", "groups", "connection", "address", "port", "user", "auth"):
        table.add_column(column)
    for row in rows:
        auth = row["key"] or ("password " + MASK if row["password"] else "")
        cells = [row["host"], ", ".join(row["groups"]), row["connection"], row["address"], row["port"], row["user"], auth]
        table.add_row(*(escape("" if cell is None else str(cell)) for cell in cells))
    Console(soft_wrap=True).print(table)
