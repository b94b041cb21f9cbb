"""Where the shipped deployment content is: playbooks/, roles/, templates/ and inventory/.

In a source checkout they sit beside the glmops package; in an installed wheel they are package data
under glmops/_content/ (pyproject.toml). One place answers for both, so `glmops run autodl`, the role
search and `glmops init` find the same files however glmops was installed.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONTENT_DIRS = ("playbooks", "roles", "templates", "inventory")


def content_root() -> Path:
    """The folder holding playbooks/ and roles/: the checkout's root, else the wheel's glmops/_content."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "playbooks").is_dir() and (checkout / "roles").is_dir():
        return checkout
    return PACKAGE_DIR / "_content"


def shipped_roles() -> Path:
    return content_root() / "roles"


def shipped_playbooks() -> dict[str, Path]:
    """The shipped playbooks by bare name: {"autodl": .../playbooks/autodl.yml, ...}."""
    folder = content_root() / "playbooks"
    return {path.stem: path for path in sorted(folder.glob("*.yml"))} if folder.is_dir() else {}


def resolve_playbook(argument: str) -> Path:
    """A playbook argument as the user typed it: an existing path wins; else a bare name (`autodl`,
    `autodl.yml`) of a shipped playbook; else the path as given (the loader reports it missing)."""
    path = Path(argument)
    if path.exists() or "/" in argument or "\\" in argument:
        return path
    name = argument[:-4] if argument.endswith((".yml", ".yaml")) else argument
    return shipped_playbooks().get(name, path)
