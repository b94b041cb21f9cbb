"""`glmops init [DIR]`: an editable copy of the shipped playbooks and inventory examples.

The playbooks (with their files/ and templates/) and the inventory examples are copied; the roles stay
the ones shipped with glmops (found after a project's own roles/) unless `--roles` copies them too,
with the shared templates/ they read. Existing files are never overwritten unless `--force`; a file
that is already identical is left alone, so a second run writes nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from glmops.errors import EXIT_ERROR, ArgumentError, GlmopsError

ALWAYS = ("playbooks", "inventory")
WITH_ROLES = ("roles", "templates")
# builds the running glmops's wheel (roles/glmops_wheel): a copy would build the copy, so it stays shipped
NOT_COPIED_ROLES = ("glmops_wheel",)
JUNK_PARTS = ("__pycache__",)
JUNK_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class CopyItem:
    """One file to write: where it comes from and where it goes (relative to DIR)."""

    source: Path
    relative: Path


def content_files(root: Path, with_roles: bool) -> list[CopyItem]:
    """The files `init` copies from the content root (glmops/shipped.py), sorted."""
    folders = ALWAYS + (WITH_ROLES if with_roles else ())
    items = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or _skipped(relative):
                continue
            items.append(CopyItem(path, relative))
    return items


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    if any(part in JUNK_PARTS or part.startswith(".") for part in parts) or relative.suffix in JUNK_SUFFIXES:
        return True
    return len(parts) > 1 and parts[0] == "roles" and parts[1] in NOT_COPIED_ROLES


def plan(items: list[CopyItem], target: Path) -> tuple[list[CopyItem], list[CopyItem], list[CopyItem]]:
    """Split into (new files, files that differ from the shipped ones, identical files)."""
    new, differ, same = [], [], []
    for item in items:
        dest = target / item.relative
        if dest.is_dir():
            raise ArgumentError(f"{dest} is a folder; glmops init would write a file there", hint="move it away or choose another DIR")
        if not dest.exists():
            new.append(item)
        elif dest.read_bytes() == item.source.read_bytes():
            same.append(item)
        else:
            differ.append(item)
    return new, differ, same


def write_copy(item: CopyItem, target: Path) -> None:
    """Write one file: a temporary file beside it, then a rename (never half a file); keeps the mode."""
    dest = target / item.relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(item.source.read_bytes())
        os.chmod(temp, item.source.stat().st_mode & 0o777 | 0o600)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def next_steps(target: Path, with_roles: bool, roles_dir: Path) -> str:
    """What to do with the copy."""
    where = "." if target.resolve() == Path.cwd().resolve() else str(target)
    lines = ["", "Next:"]
    if where != ".":
        lines.append(f"  cd {where}")
    lines += [
        "  glmops inventory add autodl-3090 --group autodl -i inventory/autodl.yml -- ssh -p 12345 root@region-9.autodl.com",
        "  glmops run playbooks/autodl.yml -i inventory/autodl.yml      # your copy; edit it, then run it again",
    ]
    if with_roles:
        lines.append("The roles in roles/ are used when glmops runs from this folder (./roles comes before the shipped ones);")
        lines.append("glmops_wheel stays the shipped one (it builds the running glmops's own wheel).")
    else:
        lines.append(f"The roles stay the shipped ones ({roles_dir}); `glmops init --roles` copies them too, to edit.")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", default=".", metavar="[DIR]", type=click.Path(file_okay=False, path_type=Path))
@click.option("--roles", "with_roles", is_flag=True, help="Copy the roles (and the templates/ they share) too, to edit them.")
@click.option("--force", is_flag=True, help="Overwrite files that differ from the shipped ones.")
def init(directory: Path, with_roles: bool, force: bool) -> None:
    """Write an editable copy of the shipped playbooks and inventory examples into DIR (default: here).

    \b
    Then run your copy by its path:  glmops run playbooks/autodl.yml -i inventory/autodl.yml
    (`glmops run autodl` runs the shipped one). Existing files are kept unless --force.
    """
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True, highlight=False)
    try:
        click.echo(_init(directory, with_roles, force))
    except GlmopsError as exc:
        err.print(f"[bold red]ERROR[/]: {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except OSError as exc:
        err.print(f"[bold red]ERROR[/]: cannot write {escape(str(exc.filename or directory))}: {escape(exc.strerror or str(exc))}")
        sys.exit(EXIT_ERROR)


def _init(target: Path, with_roles: bool, force: bool) -> str:
    """Copy the content into `target`; return the report to print."""
    from glmops.shipped import content_root, shipped_roles

    root = content_root()
    if not (root / "playbooks").is_dir():
        raise GlmopsError(f"this glmops has no shipped playbooks (looked in {root})", hint="reinstall glmops from its wheel or use a checkout")
    new, differ, same = plan(content_files(root, with_roles), target)
    if differ and not force:
        names = "\n".join(f"  {target / item.relative}" for item in differ)
        raise ArgumentError(f"{len(differ)} file(s) in {target} differ from the shipped ones; nothing was written:\n{names}",
                            hint="keep your edits (nothing to do), or run again with --force to overwrite them")
    written = new + (differ if force else [])
    for item in written:
        write_copy(item, target)
    lines = [f"wrote {target / item.relative}" + (" (overwritten)" if item in differ else "") for item in written]
    if same:
        lines.append(f"{len(same)} file(s) already there and identical, left alone")
    if not written:
        lines.append(f"nothing to write: {target} already holds the shipped files")
    return "\n".join(lines) + "\n" + next_steps(target, with_roles, shipped_roles())
