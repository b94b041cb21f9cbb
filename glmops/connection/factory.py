"""Choose and build a host's connection from its Ansible-style connection variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glmops.connection.base import Connection
from glmops.errors import GlmopsError

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


def _port(name: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise GlmopsError(f"host {name}: ansible_port must be a number, got {value!r}", field="ansible_port") from None
    if not 0 < port < 65536:
        raise GlmopsError(f"host {name}: ansible_port {port} is out of range", field="ansible_port")
    return port


def open_connection(
    name: str,
    hostvars: Mapping[str, Any],
    *,
    host_key_checking: str | None = None,
    connect_timeout: float = 10.0,
) -> Connection:
    """Return a not-yet-connected Connection for host `name` (call .connect())."""
    kind = hostvars.get("ansible_connection")
    if kind is None and name in LOCAL_NAMES and "ansible_host" not in hostvars:
        kind = "local"
    kind = kind or "ssh"
    if kind == "local":
        from glmops.connection.local import LocalConnection

        return LocalConnection(name)
    if kind not in ("ssh", "paramiko"):
        raise GlmopsError(
            f"host {name}: unsupported ansible_connection {kind!r}", field="ansible_connection", hint="use ssh or local"
        )
    from glmops.connection.ssh import SSHConnection
    from glmops.connection.sshopts import resolve

    _port(name, hostvars.get("ansible_port", 22))
    settings = resolve(name, hostvars, host_key_checking=host_key_checking)
    become_password = hostvars.get("ansible_become_password", hostvars.get("ansible_become_pass"))
    return SSHConnection(
        name,
        settings=settings,
        password=hostvars.get("ansible_password", hostvars.get("ansible_ssh_pass")),
        become_password=None if become_password is None else str(become_password),
        connect_timeout=settings.connect_timeout or connect_timeout,
    )
