"""Facts as small named units: a POSIX sh command (Linux and macOS) plus a parser of its output.

All units run in ONE remote command (`gather_script`): each unit's output is a section that
starts with an `@@name` line; `parse_output` cuts the sections and hands each unit its own lines.
A unit whose section is missing is parsed from no lines, so every fact always has a value.
Each parser is tested against recorded output in tests/fixtures/facts/<unit>/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Parser = Callable[[list[str]], dict[str, Any]]

OS_FAMILY = {"debian": "Debian", "ubuntu": "Debian", "centos": "RedHat", "rhel": "RedHat", "fedora": "RedHat",
             "rocky": "RedHat", "almalinux": "RedHat", "alpine": "Alpine", "arch": "Archlinux", "opensuse": "Suse"}
END = "@@end"


@dataclass(frozen=True)
class FactUnit:
    """One fact source: `command` prints raw data, `parse` turns its lines into facts (no prefix)."""

    name: str
    command: str
    parse: Parser


def _first(lines: list[str]) -> str:
    return lines[0] if lines else ""


def parse_hostname(lines: list[str]) -> dict[str, Any]:
    return {"hostname": _first(lines).split(".")[0], "nodename": _first(lines)}


def parse_fqdn(lines: list[str]) -> dict[str, Any]:
    return {"fqdn": _first(lines)}


def parse_uname(lines: list[str]) -> dict[str, Any]:
    system, kernel, machine = (lines + ["", "", ""])[:3]
    return {"system": system, "kernel": kernel, "architecture": machine}


def parse_distribution(lines: list[str]) -> dict[str, Any]:
    """First line: `uname -s`; then /etc/os-release (KEY=value) or, on macOS, sw_vers (Key: value)."""
    system = _first(lines)
    release = {}
    for line in lines[1:]:
        key, sep, value = line.partition("=")
        if sep:
            release[key] = value.strip().strip('"')
    if release:
        distro_id = release.get("ID", "").lower()
        like = release.get("ID_LIKE", "").split()
        return {
            "distribution": release["NAME"].split()[0] if release.get("NAME") else distro_id,
            "distribution_version": release.get("VERSION_ID", ""),
            "distribution_release": release.get("VERSION_CODENAME", ""),
            "os_family": OS_FAMILY.get(distro_id) or next((OS_FAMILY[x] for x in like if x in OS_FAMILY), system),
        }
    if system == "Darwin":
        versions = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        return {"distribution": "MacOSX", "os_family": "Darwin", "distribution_version": versions.get("ProductVersion", "").strip()}
    return {}


def parse_processor(lines: list[str]) -> dict[str, Any]:
    text = _first(lines).strip()
    return {"processor_vcpus": int(text) if text.isdigit() else 0}


def parse_memory(lines: list[str]) -> dict[str, Any]:
    """`/proc/meminfo` lines (kB); macOS prints a MemTotal line computed from hw.memsize."""
    mem = {}
    for line in lines:
        key, _, value = line.partition(":")
        try:
            mem[key.strip()] = int(value.split()[0]) // 1024
        except (ValueError, IndexError):
            pass
    return {"memtotal_mb": mem.get("MemTotal", 0), "memfree_mb": mem.get("MemAvailable", mem.get("MemFree", 0)),
            "swaptotal_mb": mem.get("SwapTotal", 0)}


def parse_mounts(lines: list[str]) -> dict[str, Any]:
    """`df -Pk`: a header, then device, 1024-blocks, used, available, capacity, mount point."""
    mounts = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[1].isdigit() and fields[3].isdigit():
            mounts.append({"device": fields[0], "mount": " ".join(fields[5:]), "size_total": int(fields[1]) * 1024,
                           "size_available": int(fields[3]) * 1024})
    return {"mounts": mounts}


def parse_python(lines: list[str]) -> dict[str, Any]:
    return {"python": {"executable": lines[0], "version": lines[1]} if len(lines) >= 2 else {}}


def parse_user(lines: list[str]) -> dict[str, Any]:
    name, uid, home, path = (lines + ["", "", "", ""])[:4]
    return {"user_id": name, "user_uid": int(uid) if uid.isdigit() else -1, "user_dir": home, "env": {"PATH": path}}


def parse_gpus(lines: list[str]) -> dict[str, Any]:
    """nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version (csv, no header/units)."""
    gpus = []
    for line in lines:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        try:
            total, used = int(float(fields[2])), int(float(fields[3]))
        except ValueError:  # "[N/A]" on some virtual GPUs
            continue
        gpus.append({"index": int(fields[0]), "name": fields[1], "memory_total_mb": total, "memory_used_mb": used,
                     "driver_version": fields[4]})
    return {"gpus": gpus}


UNITS: tuple[FactUnit, ...] = (
    FactUnit("hostname", "hostname 2>/dev/null || uname -n", parse_hostname),
    FactUnit("fqdn", "hostname -f 2>/dev/null || hostname", parse_fqdn),
    FactUnit("uname", "uname -s; uname -r; uname -m", parse_uname),
    FactUnit("distribution", "uname -s; cat /etc/os-release 2>/dev/null || sw_vers 2>/dev/null", parse_distribution),
    FactUnit("processor", "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null",
             parse_processor),
    FactUnit("memory", "grep -E '^(MemTotal|MemAvailable|MemFree|SwapTotal):' /proc/meminfo 2>/dev/null"
                       " || echo \"MemTotal: $(( $(sysctl -n hw.memsize 2>/dev/null || echo 0) / 1024 )) kB\"", parse_memory),
    FactUnit("mounts", "df -Pk 2>/dev/null", parse_mounts),
    FactUnit("python", "p=$(command -v python3 2>/dev/null) && { echo \"$p\"; \"$p\" -c "
                       "'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'; }", parse_python),
    FactUnit("user", "id -un; id -u; echo \"$HOME\"; echo \"$PATH\"", parse_user),
    FactUnit("gpus", "command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=index,name,memory.total,memory.used,"
                     "driver_version --format=csv,noheader,nounits 2>/dev/null", parse_gpus),
)
BY_NAME = {unit.name: unit for unit in UNITS}


def gather_script(units: Iterable[FactUnit] = UNITS) -> str:
    """One sh script running every unit; each unit's output follows its `@@name` line; ends with @@end.

    (The whole script runs in the connection's subshell; a unit's failing command stops nothing.)
    """
    return "".join(f"echo @@{unit.name}; {unit.command}\n" for unit in units) + f"echo {END}\n"


def sections(text: str) -> dict[str, list[str]]:
    """The lines of each `@@name` section of the gathered output."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = found.setdefault(line[2:], [])
        elif current is not None:
            current.append(line)
    return found


def parse_output(text: str, units: Iterable[FactUnit] = UNITS) -> dict[str, Any]:
    """All facts (without the ansible_ prefix) from gather_script's output."""
    found = sections(text)
    facts: dict[str, Any] = {}
    for unit in units:
        facts.update(unit.parse(found.get(unit.name, [])))
    return facts
