"""The user's own glmops files on the controller: the config folder (`glmops up`'s inventory, keys, the
clients' `.env` files) and the inventories a command reads when none is named. No dependencies."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_INVENTORY = "inventory/hosts.yml"  # in the current folder: `glmops inventory add`'s default


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/glmops, else ~/.config/glmops (%APPDATA%\\glmops on Windows)."""
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "glmops"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "glmops"


def user_inventory() -> Path:
    """The inventory `glmops up` records hosts in unless -i names another."""
    return config_dir() / "inventory.yml"


def default_inventories() -> list[str]:
    """What a command reads without -i: $GLMOPS_INVENTORY, else those of ./inventory/hosts.yml and the
    user's inventory that exist."""
    if os.environ.get("GLMOPS_INVENTORY"):
        return [os.environ["GLMOPS_INVENTORY"]]
    return [str(path) for path in (Path(DEFAULT_INVENTORY), user_inventory()) if path.is_file()]
