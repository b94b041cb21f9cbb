"""Shell completion of host names (`eval "$(_GLMOPS_COMPLETE=bash_source glmops)"`).

The callbacks read the inventory named by `-i` on the command line so far (else `$GLMOPS_INVENTORY`,
else the default inventories that exist) and never raise: a broken inventory completes nothing,
and a traceback never reaches the shell. Cheap: no paramiko, no connection."""

from __future__ import annotations

from collections.abc import Iterable

import click
from click.shell_completion import CompletionItem

from glmops.commands.tunnel_state import read_states
from glmops.userconfig import default_inventories


def inventory_sources(ctx: click.Context) -> list[str]:
    """The inventories the command would read: `-i` given so far, else $GLMOPS_INVENTORY, else the defaults that exist."""
    for name in ("inventories", "sources"):  # the -i parameter of the day-2 commands / of `tunnel open`
        given = ctx.params.get(name)
        if given:
            return [str(s) for s in given]
    return default_inventories()


def inventory_names(sources: list[str], *, groups: bool = False) -> list[str]:
    """Host names (and group names when `groups`) of `sources`, in inventory order; [] when they do not load."""
    from glmops.inventory import load_inventory

    names: list[str] = []
    for source in sources:  # one at a time: a broken file does not hide the hosts of the others
        try:
            inventory = load_inventory([source])
        except Exception:  # noqa: BLE001 - completion must never print a traceback
            continue
        names.extend(inventory.hosts)
        if groups:
            names.extend(g for g in inventory.groups if g not in ("all", "ungrouped"))
    return names


def _items(names: Iterable[str], incomplete: str) -> list[CompletionItem]:
    seen: dict[str, None] = {}
    for name in names:
        if name.startswith(incomplete):
            seen.setdefault(name, None)
    return [CompletionItem(name) for name in seen]


def complete_hosts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """HOST: the inventory's host names starting with `incomplete`."""
    try:
        return _items(inventory_names(inventory_sources(ctx)), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_patterns(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """PATTERN: host and group names starting with `incomplete`."""
    try:
        return _items(inventory_names(inventory_sources(ctx), groups=True), incomplete)
    except Exception:  # noqa: BLE001
        return []


def complete_first_host(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`[HOST] PROMPT`: host names for the first word only (after it comes the prompt)."""
    if ctx.params.get(param.name or ""):
        return []
    return complete_hosts(ctx, param, incomplete)


def complete_tunnel_hosts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`tunnel stop HOST`: the hosts of the open tunnels first, then the inventory's."""
    try:
        open_hosts = [str(s["host"]) for s in read_states() if s.get("host")]
        return _items([*open_hosts, *inventory_names(inventory_sources(ctx))], incomplete)
    except Exception:  # noqa: BLE001
        return []
