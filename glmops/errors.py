"""Errors that reach the user, and the exit codes they map to.

Every error raised because of bad input carries a `Pos` (file, line, column) so the message can say
where the problem is. The CLI prints `str(error)` and exits with `error.exit_code`; a Python
traceback is shown only with -vvv.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes, as ansible-playbook uses them, plus one of our own for a playbook that does not load.
EXIT_OK = 0
EXIT_ERROR = 1  # any other error (bad command line, internal error)
EXIT_HOST_FAILED = 2  # at least one host failed a task
EXIT_HOST_UNREACHABLE = 4  # at least one host was unreachable
EXIT_LOAD_ERROR = 3  # the playbook, inventory or a role did not load or validate; nothing ran
EXIT_INTERRUPTED = 99  # the user pressed Ctrl-C


@dataclass(frozen=True)
class Pos:
    """A place in a source file. Lines and columns count from 1; 0 means unknown."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}" if self.column else f"{self.file}:{self.line}"
        return self.file


class GlmopsError(Exception):
    """Base class of every error meant for the user (no traceback shown)."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, pos: Pos | None = None, field: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.field = field
        self.hint = hint

    def __str__(self) -> str:
        where = f"{self.pos}: " if self.pos else ""
        field = f"field '{self.field}': " if self.field else ""
        text = f"{where}{field}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class LoadError(GlmopsError):
    """A playbook, role, vars file or inventory is malformed. Raised before anything runs."""

    exit_code = EXIT_LOAD_ERROR


class TemplateError(GlmopsError):
    """A Jinja2 expression failed: undefined variable, syntax error, bad filter argument."""


class ArgumentError(GlmopsError):
    """A module argument is unknown, missing, or of the wrong type."""


class ConnectionFailure(GlmopsError):
    """A host cannot be reached or authenticated: the host is UNREACHABLE, not FAILED."""

    exit_code = EXIT_HOST_UNREACHABLE


class HostKeyError(ConnectionFailure):
    """The host's key is unknown or has changed."""


class AuthenticationFailure(ConnectionFailure):
    """The host refused our key or password (trying again will not help)."""
