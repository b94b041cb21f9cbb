"""`ssh-copy-id` for glmops: log in once with a password and add the user's public key to the
host's ~/.ssh/authorized_keys (only when it is not there yet), so later runs need no password."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any

from glmops.errors import ArgumentError, ConnectionFailure

DEFAULT_PUBLIC_KEYS = ("~/.ssh/id_ed25519.pub", "~/.ssh/id_ecdsa.pub", "~/.ssh/id_rsa.pub")


def find_public_key(key: str | None) -> str:
    """The public key file to install: KEY.pub (or KEY itself if it ends in .pub), else the default."""
    if key:
        candidates = [key if key.endswith(".pub") else key + ".pub"]
    else:
        candidates = list(DEFAULT_PUBLIC_KEYS)
    for candidate in candidates:
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    raise ArgumentError(
        "no public key to install: none of " + ", ".join(candidates) + " exists",
        field="--copy-id",
        hint="create one with `ssh-keygen -t ed25519`, or name the private key with --key",
    )


def read_public_key(path: str) -> tuple[str, str]:
    """(the whole line, its base64 part) of an OpenSSH public key file."""
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArgumentError(f"cannot read public key {path}: {exc}", field="--copy-id") from None
    fields = line.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-", "sk-")) or "'" in line:
        raise ArgumentError(f"{path} is not an OpenSSH public key (expected 'ssh-ed25519 AAAA... comment')", field="--copy-id")
    return line, fields[1]


# Reads the key line on stdin; appends it unless a line already holds the same key material.
_INSTALL = r"""key=$(cat) && b64=$1 && umask 077 && mkdir -p "$HOME/.ssh" && f="$HOME/.ssh/authorized_keys" && touch "$f" &&
if grep -qF -- "$b64" "$f"; then echo present; else
  if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi
  printf '%s\n' "$key" >> "$f" && echo added; fi"""


def copy_id(name: str, hostvars: Mapping[str, Any], password: str, public_key: str, *,
            host_key_checking: str | None = None) -> str:
    """Install `public_key` on host `name` using `password`; returns 'added' or 'present'.

    Afterwards a fresh login with the key alone is tried, so a success really means "no password
    needed any more".
    """
    from glmops.connection.factory import open_connection

    line, b64 = read_public_key(public_key)
    private = public_key[: -len(".pub")]
    with_password = {k: v for k, v in hostvars.items() if k != "ansible_ssh_private_key_file"}
    with_password["ansible_password"] = password
    conn = open_connection(name, with_password, host_key_checking=host_key_checking)
    with conn:
        result = conn.run(f"sh -c {shlex.quote(_INSTALL)} sh {shlex.quote(b64)}", stdin=line.encode() + b"\n")
    status = result.stdout.strip()
    if result.rc != 0 or status not in ("added", "present"):
        raise ConnectionFailure(f"installing the key on {name} failed: {(result.stderr or result.stdout).strip()}")
    if os.path.exists(private):
        with_key = {k: v for k, v in hostvars.items() if k not in ("ansible_password", "ansible_ssh_pass")}
        with_key["ansible_ssh_private_key_file"] = private
        check = open_connection(name, with_key, host_key_checking="yes" if host_key_checking == "accept-new" else host_key_checking)
        try:
            with check:
                check.run("true")
        except ConnectionFailure as exc:
            raise ConnectionFailure(f"the key was installed on {name} but logging in with {private} still fails: {exc}",
                                    hint="the host may not allow key logins (PubkeyAuthentication, AuthorizedKeysFile)") from None
    return status
