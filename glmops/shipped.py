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
    """The folder holding playbooks/ and roles/: the wheel's glmops/_content when installed from a wheel
    (setup.py copies it into the build only), else the checkout's root (source tree, editable install)."""
    packaged = PACKAGE_DIR / "_content"
    if (packaged / "playbooks").is_dir():
        return packaged
    checkout = PACKAGE_DIR.parent
    if (checkout / "playbooks").is_dir() and (checkout / "roles").is_dir():
        return checkout
    return packaged


def shipped_roles() -> Path:
    return content_root() / "roles"


def shipped_playbooks() -> dict[str, Path]:
    """The shipped playbooks by bare name: {"autodl": .../playbooks/autodl.yml, ...}."""
    folder = content_root() / "playbooks"
    return {path.stem: path for path in sorted(folder.glob("*.yml"))} if folder.is_dir() else {}


def resolve_playbook(argument: str) -> Path:
    """A playbook argument as the user typed it: an existing file wins; else a bare name (`autodl`,
    `autodl.yml`) of a shipped playbook; else the path as given (the caller reports it missing)."""
    path = Path(argument)
    if path.is_file() or "/" in argument or "\\" in argument:
        return path
    return shipped_playbooks().get(playbook_name(argument), path)


def playbook_name(argument: str) -> str:
    """`autodl.yml` / `autodl.yaml` / `autodl` -> `autodl`."""
    for suffix in (".yml", ".yaml"):
        if argument.endswith(suffix):
            return argument[: -len(suffix)]
    return argument


def unknown_playbook_hint() -> str:
    """The hint for a playbook argument that is neither a file nor a shipped name."""
    names = ", ".join(shipped_playbooks()) or "none found in " + str(content_root())
    return f"give a playbook file, or the name of a shipped one: {names}"
