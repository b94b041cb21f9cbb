"""Secrets typed by the user: without echo on a terminal, else one line of stdin (scripts, tests)."""

from __future__ import annotations

import getpass
import sys

from glmops.errors import ArgumentError


def read_secret(prompt: str, option: str, *, allow_empty: bool = False) -> str:
    """Ask for a secret: getpass on a terminal, else the next line of stdin (its newline removed)."""
    if sys.stdin.isatty():
        try:
            value = getpass.getpass(f"{prompt}: ")
        except EOFError:
            value = ""
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value and not allow_empty:
        raise ArgumentError(f"{option}: no password was given", field=option,
                            hint="type it at the prompt, or feed it as one line on stdin")
    return value


def ask_passwords(ask_pass: bool, ask_become_pass: bool) -> tuple[str | None, str | None]:
    """--ask-pass / --ask-become-pass, in that order; an empty become password means the SSH one."""
    password = read_secret("SSH password", "--ask-pass") if ask_pass else None
    become = None
    if ask_become_pass:
        hint = "BECOME password" + (" [defaults to SSH password]" if password else "")
        become = read_secret(hint, "--ask-become-pass", allow_empty=bool(password)) or password
    return password, become
