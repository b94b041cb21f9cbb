"""Choose and build a host's connection from its Ansible-style connection variables."""

from __future__ import annotations

import os
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

    policy = host_key_checking or hostvars.get("host_key_checking") or os.environ.get("GLMOPS_HOST_KEY_CHECKING") or "yes"
    if isinstance(policy, bool):
        policy = "yes" if policy else "no"
    return SSHConnection(
        name,
        hostname=str(hostvars.get("ansible_host") or name),
        port=_port(name, hostvars.get("ansible_port", 22)),
        user=hostvars.get("ansible_user"),
        key_filename=hostvars.get("ansible_ssh_private_key_file"),
        password=hostvars.get("ansible_password"),
        known_hosts=str(hostvars.get("glmops_known_hosts") or os.environ.get("GLMOPS_KNOWN_HOSTS") or "~/.ssh/known_hosts"),
        host_key_checking=str(policy),
        connect_timeout=connect_timeout,
    )
