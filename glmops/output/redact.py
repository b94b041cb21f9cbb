"""Redaction of secrets: the one place every event passes through before any output.

Secret values are collected from variables whose names look secret (password, passwd, secret,
token, api_key), from module arguments marked no_log, and everything a `no_log` task returns is
replaced as a whole.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "********"
SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|api_?key|private_key_pass", re.I)
HIDDEN = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
MIN_SECRET_LEN = 3  # shorter values would mask ordinary text everywhere


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name))) and str(name) not in ("ansible_ssh_private_key_file",)


class Redactor:
    """Knows the secret values of a run and replaces them in any structure."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: Any) -> None:
        """Remember a secret value (strings, and every string inside lists and dicts)."""
        if isinstance(value, Mapping):
            for item in value.values():
                self.add(item)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                self.add(item)
        elif value is not None and not isinstance(value, bool):
            text = str(value)
            if len(text) >= MIN_SECRET_LEN and text not in self._secrets:
                with self._lock:
                    self._secrets.add(text)
                    self._pattern = None

    def add_from_vars(self, variables: Mapping[str, Any]) -> None:
        """Remember the values of secret-looking variable names, nested mappings included."""
        for key, value in variables.items():
            if is_secret_name(key):
                self.add(value)
            elif isinstance(value, Mapping):
                self.add_from_vars(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, Mapping):
                        self.add_from_vars(item)

    def _regex(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._secrets:
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            return self._pattern

    def scrub(self, value: Any) -> Any:
        """A copy of `value` with every secret, and every value under a secret-looking key, replaced by ********."""
        return _scrub(value, self._regex())


def _scrub(value: Any, pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return pattern.sub(MASK, value) if pattern else value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) and isinstance(item, (str, int, float)) and not isinstance(item, bool) and item != "":
                out[key] = MASK
            else:
                out[key] = _scrub(item, pattern)
        return out
    if isinstance(value, (list, tuple)):
        return [_scrub(item, pattern) for item in value]
    return value


def hide_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a no_log task shows: its status, never its data."""
    out: dict[str, Any] = {"censored": HIDDEN}
    for key in ("changed", "failed", "skipped"):
        if key in result:
            out[key] = result[key]
    return out
