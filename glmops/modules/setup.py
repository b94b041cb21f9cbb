"""setup: gather facts about the host in one command (OS, CPU, memory, disks, Python, GPUs)."""

from __future__ import annotations

from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

# One sh script, sections separated by '@@name' lines. POSIX sh; Linux and macOS.
GATHER = r"""
echo @@hostname; hostname 2>/dev/null || uname -n
echo @@fqdn; hostname -f 2>/dev/null || hostname
echo @@uname; uname -s; uname -r; uname -m
echo @@os_release; cat /etc/os-release 2>/dev/null
echo @@sw_vers; sw_vers 2>/dev/null
echo @@nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null
echo @@meminfo; grep -E '^(MemTotal|MemAvailable|MemFree|SwapTotal):' /proc/meminfo 2>/dev/null || echo "MemTotal: $(( $(sysctl -n hw.memsize 2>/dev/null || echo 0) / 1024 )) kB"
echo @@df; df -Pk 2>/dev/null
echo @@python; p=$(command -v python3 2>/dev/null) && { echo "$p"; "$p" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
echo @@user; id -un; id -u; echo "$HOME"; echo "$PATH"
echo @@gpus; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader,nounits 2>/dev/null
echo @@end
"""

OS_FAMILY = {"debian": "Debian", "ubuntu": "Debian", "centos": "RedHat", "rhel": "RedHat", "fedora": "RedHat",
             "rocky": "RedHat", "almalinux": "RedHat", "alpine": "Alpine", "arch": "Archlinux", "opensuse": "Suse"}


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    return sections


def parse_facts(text: str) -> dict[str, Any]:
    """Turn GATHER's output into Ansible-style facts (without the ansible_ prefix)."""
    s = _sections(text)
    uname = s.get("uname", []) + ["", "", ""]
    facts: dict[str, Any] = {
        "hostname": (s.get("hostname") or [""])[0].split(".")[0],
        "nodename": (s.get("hostname") or [""])[0],
        "fqdn": (s.get("fqdn") or [""])[0],
        "system": uname[0],
        "kernel": uname[1],
        "architecture": uname[2],
    }
    release = {}
    for line in s.get("os_release", []):
        key, _, value = line.partition("=")
        release[key] = value.strip().strip('"')
    if release:
        distro_id = release.get("ID", "").lower()
        facts["distribution"] = release.get("NAME", distro_id).split()[0] if release.get("NAME") else distro_id
        facts["distribution_version"] = release.get("VERSION_ID", "")
        facts["distribution_release"] = release.get("VERSION_CODENAME", "")
        like = release.get("ID_LIKE", "").split()
        facts["os_family"] = OS_FAMILY.get(distro_id) or next((OS_FAMILY[x] for x in like if x in OS_FAMILY), facts["system"])
    elif facts["system"] == "Darwin":
        vers = dict(line.split(":", 1) for line in s.get("sw_vers", []) if ":" in line)
        facts.update(distribution="MacOSX", os_family="Darwin", distribution_version=vers.get("ProductVersion", "").strip())
    try:
        facts["processor_vcpus"] = int((s.get("nproc") or ["0"])[0])
    except ValueError:
        facts["processor_vcpus"] = 0
    mem = {}
    for line in s.get("meminfo", []):
        key, _, value = line.partition(":")
        try:
            mem[key.strip()] = int(value.split()[0]) // 1024
        except (ValueError, IndexError):
            pass
    facts["memtotal_mb"] = mem.get("MemTotal", 0)
    facts["memfree_mb"] = mem.get("MemAvailable", mem.get("MemFree", 0))
    facts["swaptotal_mb"] = mem.get("SwapTotal", 0)
    mounts = []
    for line in s.get("df", [])[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[1].isdigit():
            mounts.append({"device": fields[0], "mount": " ".join(fields[5:]), "size_total": int(fields[1]) * 1024,
                           "size_available": int(fields[3]) * 1024})
    facts["mounts"] = mounts
    python = s.get("python", [])
    facts["python"] = {"executable": python[0], "version": python[1]} if len(python) >= 2 else {}
    user = s.get("user", []) + ["", "", "", ""]
    facts.update(user_id=user[0], user_uid=int(user[1]) if user[1].isdigit() else -1, user_dir=user[2], env={"PATH": user[3]})
    gpus = []
    for line in s.get("gpus", []):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 5 and fields[0].isdigit():
            gpus.append({"index": int(fields[0]), "name": fields[1], "memory_total_mb": int(float(fields[2])),
                         "memory_used_mb": int(float(fields[3])), "driver_version": fields[4]})
    facts["gpus"] = gpus
    return facts


class SetupModule(Module):
    name = "setup"
    doc = (
        "Gather facts about the host with one command: ansible_hostname, ansible_fqdn, ansible_system, "
        "ansible_kernel, ansible_architecture, ansible_distribution(_version), ansible_os_family, "
        "ansible_processor_vcpus, ansible_memtotal_mb, ansible_memfree_mb, ansible_mounts (size_total, "
        "size_available per mount), ansible_python, ansible_user_id, ansible_user_dir, and ansible_gpus "
        "(index, name, memory_total_mb, memory_used_mb, driver_version per NVIDIA GPU; empty without one). "
        "The same values are under ansible_facts without the prefix. Runs automatically (lazily) when a "
        "play gathers facts."
    )
    args = {
        "gather_subset": Arg("list", help="Accepted for Ansible compatibility; all facts are gathered (one command)."),
        "filter": Arg("list", help="Only keep facts whose names match these shell-style patterns."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        result = ctx.conn.run(GATHER)
        if "@@end" not in result.stdout:
            return ModuleResult(failed=True, msg=f"gathering facts failed: {result.stderr.strip()}")
        facts = parse_facts(result.stdout)
        if args.get("filter"):
            from fnmatch import fnmatch

            facts = {k: v for k, v in facts.items() if any(fnmatch(k, p) or fnmatch("ansible_" + k, p) for p in args["filter"])}
        out: dict[str, Any] = {"ansible_facts": facts}
        out.update({f"ansible_{k}": v for k, v in facts.items()})
        return ModuleResult(facts=out, data={"ansible_facts": facts})


MODULE = SetupModule
