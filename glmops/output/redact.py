"""Redaction of secrets: the one place every event passes through before any output.

Secret values are collected from variables whose names look secret (password, passwd, secret,
token, api_key), from module arguments marked no_log, and from `lookup('env'|'file', NAME)` when
NAME looks secret; everything a `no_log` task returns is replaced as a whole.

Values derived from a secret are masked too, as far as that can be done by looking at text: the
common encodings of each secret (upper/lower/capitalized case, base64, URL-encoded, JSON-escaped,
shell-quoted) are secrets as well, and any run of 6 or more characters of a secret (a slice, a
prefix) that mixes kinds of characters (lower, upper, digit, other; so that words such as
'change' in 'changeme', or plain numbers, never mask ordinary text) is masked wherever it appears.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import threading
from urllib.parse import quote, quote_plus
from collections.abc import Mapping
from typing import Any

MASK = "********"
# A variable is secret when one word of its name says so: `hf_token`, `db_password`, `ZHIPU_API_KEY`,
# `client_secret`, `ansible_become_pass`; `max_tokens`, `tokenizer_path` or `bypass_proxy` are not.
SECRET_WORDS = frozenset({"password", "passwd", "pass", "passphrase", "secret", "secrets", "token", "apikey"})
SECRET_PARTS = re.compile(r"api_?key|secret", re.I)
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
HIDDEN = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
MIN_SECRET_LEN = 3  # shorter values would mask ordinary text everywhere
FRAGMENT_LEN = 6  # slices/prefixes of a secret this long (or longer) are masked


def encodings(secret: str) -> set[str]:
    """The common transformations of a secret that would print it in another form."""
    raw = secret.encode("utf-8", errors="surrogatepass")
    forms = {
        secret.upper(), secret.lower(), secret.capitalize(), secret.swapcase(),
        base64.b64encode(raw).decode("ascii"), base64.b64encode(raw).decode("ascii").rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii"),
        quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret),
        json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
        shlex.quote(secret), repr(secret)[1:-1],
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


def _token_like(text: str) -> bool:
    """Two kinds of characters (lower, upper, digit, other) and not a capitalized word: never
    ordinary text such as 'change', 'CHANGE', 'Change' or '123456'."""
    kinds = {"l" if c.islower() else "u" if c.isupper() else "d" if c.isdigit() else "o" for c in text}
    return len(kinds) >= 2 and not (text.isalpha() and text.istitle())


def fragments(secret: str) -> set[str]:
    """The FRAGMENT_LEN-long slices of a token-like secret that cannot be ordinary words or numbers.

    Values with spaces and paths (a `secret_dir: /etc/app`) give none: their slices are ordinary text.
    """
    if len(secret) < 8 or any(c.isspace() for c in secret) or secret[0] in "/~." or "://" in secret:
        return set()
    return {secret[i : i + FRAGMENT_LEN] for i in range(len(secret) - FRAGMENT_LEN + 1)
            if _token_like(secret[i : i + FRAGMENT_LEN])}


def is_secret_name(name: str) -> bool:
    """Does a variable's name say that its value is secret? (See SECRET_WORDS.)"""
    name = str(name)
    if SECRET_PARTS.search(name):
        return True
    return any(word.lower() in SECRET_WORDS for word in _NAME_WORDS.findall(name))


class Redactor:
    """Knows the secret values of a run and replaces them in any structure."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()  # the values as they were given
        self._forms: set[str] = set()  # the values and their encodings
        self._fragments: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._fragment_pattern: re.Pattern[str] | None = None

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
                forms = {text} | (encodings(text) if len(text) >= FRAGMENT_LEN else set())
                with self._lock:
                    self._secrets.add(text)
                    self._forms |= forms
                    for form in (text, text.upper(), text.lower()):
                        self._fragments |= fragments(form)
                    self._pattern = None
                    self._fragment_pattern = None

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
            if self._pattern is None and self._forms:
                ordered = sorted(self._forms, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            return self._pattern

    def _fragment_regex(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._fragment_pattern is None and self._fragments:
                self._fragment_pattern = re.compile("|".join(re.escape(s) for s in sorted(self._fragments)))
            return self._fragment_pattern

    def _mask(self, text: str) -> str:
        pattern = self._regex()
        if pattern is not None:
            text = pattern.sub(MASK, text)
        fragment = self._fragment_regex()
        if fragment is None or not fragment.search(text):
            return text
        with self._lock:
            secrets = [s for f in self._forms for s in (f, f.upper(), f.lower())]
        out, at = [], 0
        for match in fragment.finditer(text):
            start = match.start()
            if start < at:
                continue
            end = match.end()
            while end < len(text) and any(text[start : end + 1] in s for s in secrets):
                end += 1  # the longest slice of a secret starting here
            out.append(text[at:start] + MASK)
            at = end
        return "".join(out) + text[at:]

    def scrub(self, value: Any) -> Any:
        """A copy of `value` with every secret, and every value under a secret-looking key, replaced by ********."""
        return _scrub(value, self._mask if self._forms else None)


def _scrub(value: Any, mask: Any) -> Any:
    if isinstance(value, str):
        return mask(value) if mask else value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) and isinstance(item, (str, int, float)) and not isinstance(item, bool) and item != "":
                out[key] = MASK
            else:
                out[key] = _scrub(item, mask)
        return out
    if isinstance(value, (list, tuple)):
        return [_scrub(item, mask) for item in value]
    return value


def hide_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a no_log task shows: its status, never its data."""
    out: dict[str, Any] = {"censored": HIDDEN}
    for key in ("changed", "failed", "skipped"):
        if key in result:
            out[key] = result[key]
    return out
