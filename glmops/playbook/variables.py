"""Variable precedence: which value of a variable a task sees.

From lowest to highest (a later source wins):

 1. role defaults (roles/X/defaults/main.yml) of every role in the play
 2. inventory group vars: 'all' first, then parent groups before child groups
 3. inventory host vars (host_vars/ included)
 4. play `vars`
 5. play `vars_files`
 6. role vars (roles/X/vars/main.yml) and role parameters of the task's role
 7. block vars (outer blocks first)
 8. task vars
 9. registered results and set_fact
10. extra vars (-e)

Magic variables (inventory_hostname, groups, hostvars, ...) are added on top; a user variable can
not replace them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

PRECEDENCE = (
    "role defaults",
    "inventory group vars",
    "inventory host vars",
    "play vars",
    "play vars_files",
    "role vars",
    "block vars",
    "task vars",
    "registered vars and set_fact",
    "extra vars",
)


def merge_layers(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge variable layers, lowest first (a key in a later layer replaces the earlier one)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return merged


class HostVars(Mapping[str, Any]):
    """`hostvars[NAME]`: another host's variables, computed when asked for."""

    def __init__(self, names: list[str], lookup: Callable[[str], Mapping[str, Any]]):
        self._names = names
        self._lookup = lookup

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        if name not in self._names:
            raise KeyError(name)
        return self._lookup(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
