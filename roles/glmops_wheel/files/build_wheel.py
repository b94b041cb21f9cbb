#!/usr/bin/env python3
"""Build the running glmops's wheel, reproducibly, with the standard library only.

    python3 build_wheel.py SOURCE_DIR CACHE_DIR     -> prints the wheel's path, its SHA-256, then BUILT or CACHED

SOURCE_DIR is either a source checkout (pyproject.toml and glmops/: the wheel is built from the tree),
or any folder inside a glmops installed from a wheel (`pip install glmops`: no source tree exists and
pip keeps no copy of the wheel it installed, so the installed package, which is pure Python and holds
its deployment content under glmops/_content, is packed again with its own dist-info METADATA and
entry points).

The wheel lands in CACHE_DIR/<source hash>/; an unchanged tree is not built again, and the same
tree always gives the same bytes (sorted entries, fixed timestamps, fixed permissions), so copying
it to a target changes nothing when nothing changed. Needs neither pip nor setuptools on the
controller (any Python >= 3.11, or 3.10 with `tomli` for a checkout).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


def _load_pyproject(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _sources(root: Path) -> list[Path]:
    """The package's files: glmops/**/*, without byte-code."""
    files = []
    for path in sorted((root / "glmops").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(path)
    return files


def _hash(root: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def source_hash(root: Path) -> str:
    return _hash(root, [root / "pyproject.toml", *_sources(root)])


# The dist-info files an installer writes (or that describe one installation), never copied into a wheel.
INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"}


def installed_package(start: Path) -> tuple[Path, Path] | None:
    """(site folder, glmops-*.dist-info) of the installed glmops holding `start`, or None."""
    for folder in [start, *start.parents]:
        if (folder / "glmops" / "__init__.py").is_file():
            infos = sorted(folder.glob("glmops-*.dist-info"))
            if infos and (infos[-1] / "METADATA").is_file():
                return folder, infos[-1]
    return None


def _metadata_field(metadata: str, name: str) -> str:
    for line in metadata.splitlines():
        if line.startswith(name + ":"):
            return line.partition(":")[2].strip()
        if not line:
            break
    raise ValueError(f"METADATA has no {name} field")


def _dist_info_files(dist_info: Path) -> list[Path]:
    return [p for p in sorted(dist_info.rglob("*")) if p.is_file() and p.relative_to(dist_info).as_posix() not in INSTALL_ONLY]


def _write_wheel(wheel: Path, dist_info: str, entries: list[tuple[str, bytes]]) -> None:
    """Write WHEEL and RECORD after `entries`, to a temporary file renamed into place."""
    entries = [*entries, (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: glmops build_wheel.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n")]
    record = [_record_line(n, d) for n, d in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    wheel.parent.mkdir(parents=True, exist_ok=True)
    part = wheel.with_suffix(".part")
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry_name, data in entries:
            info = zipfile.ZipInfo(entry_name, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    os.replace(part, wheel)


def build_installed(site: Path, dist_info: Path, cache: Path) -> tuple[Path, bool]:
    """Pack an installed glmops (its files under site/glmops and its dist-info) into a wheel again."""
    metadata = (dist_info / "METADATA").read_text(encoding="utf-8")
    name, version = _metadata_field(metadata, "Name"), _metadata_field(metadata, "Version")
    sources, infos = _sources(site), _dist_info_files(dist_info)
    wheel = cache / _hash(site, sources + infos) / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    if wheel.exists():
        return wheel, False
    new_info = f"{name.replace('-', '_')}-{version}.dist-info"
    entries = [(p.relative_to(site).as_posix(), p.read_bytes()) for p in sources]
    entries += [(f"{new_info}/{p.relative_to(dist_info).as_posix()}", p.read_bytes()) for p in infos]
    _write_wheel(wheel, new_info, entries)
    return wheel, True


def _metadata(project: dict) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in sorted(project.get("optional-dependencies", {}).items()):
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {dep}; extra == "{extra}"' for dep in deps]
    return "\n".join(lines) + "\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(root: Path, cache: Path) -> tuple[Path, bool]:
    """Return (wheel path, built now?)."""
    project = _load_pyproject(root / "pyproject.toml")["project"]
    name, version = project["name"], project["version"]
    out_dir = cache / source_hash(root)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    if wheel.exists():
        return wheel, False
    dist_info = f"{name}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [(p.relative_to(root).as_posix(), p.read_bytes()) for p in _sources(root)]
    scripts = project.get("scripts", {})
    if scripts:
        entries.append((f"{dist_info}/entry_points.txt", ("[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))).encode()))
    entries.append((f"{dist_info}/METADATA", _metadata(project).encode()))
    _write_wheel(wheel, dist_info, entries)
    return wheel, True


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: build_wheel.py SOURCE_DIR CACHE_DIR", file=sys.stderr)
        return 2
    root, cache = Path(argv[1]).resolve(), Path(argv[2]).expanduser().resolve()
    if (root / "pyproject.toml").is_file() and (root / "glmops").is_dir():
        wheel, built = build(root, cache)
    elif installed := installed_package(root):
        wheel, built = build_installed(*installed, cache)
    else:
        print(f"{root} is neither a glmops checkout (pyproject.toml and glmops/) nor inside a glmops installed from a wheel "
              "(glmops/ beside a glmops-*.dist-info); set glmops_source_dir", file=sys.stderr)
        return 2
    print(wheel)
    print(hashlib.sha256(wheel.read_bytes()).hexdigest())
    print("BUILT" if built else "CACHED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
