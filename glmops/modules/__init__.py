"""Module registry. A module `NAME` lives in `glmops/modules/NAME.py` and exports `MODULE`."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import lru_cache

from glmops.modules.base import Module

PREFIXES = ("ansible.builtin.", "ansible.legacy.")
_NOT_MODULES = {"base"}


def canonical_name(name: str) -> str:
    """`ansible.builtin.copy` -> `copy`."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@lru_cache(maxsize=None)
def module_names() -> tuple[str, ...]:
    """All modules that ship with glmops."""
    return tuple(
        sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_") and info.name not in _NOT_MODULES)
    )


def is_module(name: str) -> bool:
    return canonical_name(name) in module_names()


def nearest_modules(name: str) -> list[str]:
    return difflib.get_close_matches(canonical_name(name), module_names(), n=3, cutoff=0.5)


@lru_cache(maxsize=None)
def get_module(name: str) -> Module:
    """Return the module instance for `name` (KeyError if there is none)."""
    short = canonical_name(name)
    if short not in module_names():
        raise KeyError(name)
    return importlib.import_module(f"glmops.modules.{short}").MODULE()
