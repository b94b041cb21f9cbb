"""gpu_facts: what a ChatGLM3 deploy needs to know about a host, in one round trip, and the profile to use.

Each fact is a small named unit: a sh snippet (a section of GATHER) and a pure parser tested
against recorded output (tests/test_gpu_facts.py).
"""

from __future__ import annotations

import shlex
from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult
from glmops.profile import PROFILES, ProfileError, decide

NVIDIA_QUERY = "nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader,nounits"

# Sections start with '@@name' lines. POSIX sh; Linux and macOS. {disk_path} and {turbo} are quoted.
GATHER = (
    "echo @@nvidia; if command -v nvidia-smi >/dev/null 2>&1; then " + NVIDIA_QUERY + " 2>&1; echo \"rc=$?\"; fi\n"
    "echo @@cuda; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*'\n"
    "echo @@uname; uname -s; uname -m\n"
    "echo @@sysctl; [ \"$(uname -s)\" = Darwin ] && sysctl hw.memsize machdep.cpu.brand_string 2>/dev/null\n"
    "echo @@meminfo; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null\n"
    "echo @@df; p={disk_path}; while [ ! -e \"$p\" ] && [ \"$p\" != / ]; do p=$(dirname -- \"$p\"); done; "
    "echo \"path=$p\"; df -Pk -- \"$p\" 2>/dev/null\n"
    "echo @@turbo; [ -e {turbo} ] && echo present\n"
    "echo @@end\n"
)


def sections(text: str) -> dict[str, list[str]]:
    """GATHER's output split at its '@@name' lines."""
    found: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return found


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_nvidia_smi(lines: list[str]) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(gpus, driver version, error) from `nvidia-smi --query-gpu=name,memory.total,memory.free,
    driver_version --format=csv,noheader,nounits` output (plus the `rc=N` line GATHER adds).

    A GPU line is `name, total MiB, free MiB, driver`; anything else (nvidia-smi's own complaints,
    "No devices were found", "[N/A]") is reported as the error when no GPU line was found.
    """
    gpus: list[dict[str, Any]] = []
    driver = None
    other = []
    for line in lines:
        if line.startswith("rc=") or not line.strip():
            continue
        fields = [f.strip() for f in line.rsplit(",", 3)]
        total = _number(fields[1]) if len(fields) == 4 else None
        free = _number(fields[2]) if len(fields) == 4 else None
        if total is None or free is None:
            other.append(line.strip())
            continue
        gpus.append({"index": len(gpus), "name": fields[0], "memory_total_mb": int(total), "memory_free_mb": int(free)})
        driver = driver or fields[3]
    error = None if gpus else ("; ".join(other) or None)
    return gpus, driver, error


def parse_cuda(lines: list[str]) -> str | None:
    """The CUDA version the driver supports, from nvidia-smi's header ('CUDA Version: 12.2')."""
    for line in lines:
        if "CUDA Version:" in line:
            return line.split(":", 1)[1].strip() or None
    return None


def parse_meminfo(lines: list[str]) -> tuple[int, int]:
    """(total MiB, available MiB) from /proc/meminfo lines ('MemTotal:  65842148 kB')."""
    values: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) // 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemTotal", 0))


def parse_sysctl(lines: list[str]) -> tuple[int, str]:
    """(memory MiB, CPU brand) from macOS `sysctl hw.memsize machdep.cpu.brand_string`."""
    memory, brand = 0, ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "hw.memsize" and value.strip().isdigit():
            memory = int(value.strip()) // (1024 * 1024)
        elif key.strip() == "machdep.cpu.brand_string":
            brand = value.strip()
    return memory, brand


def parse_df(lines: list[str]) -> tuple[str | None, int | None, str | None]:
    """(path looked at, free MiB, mount point) from GATHER's `path=...` line and `df -Pk` output."""
    path = next((line[5:] for line in lines if line.startswith("path=")), None)
    rows = [line for line in lines if not line.startswith("path=")]
    for line in rows[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[3].isdigit():
            return path, int(fields[3]) // 1024, " ".join(fields[5:])
    return path, None, None


def parse_facts(text: str) -> dict[str, Any]:
    """All glmops_* facts (except the profile) from GATHER's output."""
    s = sections(text)
    gpus, driver, nvidia_error = parse_nvidia_smi(s.get("nvidia", []))
    uname = s.get("uname", []) + ["", ""]
    mac = uname[0] == "Darwin"
    if mac:
        ram, brand = parse_sysctl(s.get("sysctl", []))
        available = ram
    else:
        (ram, available), brand = parse_meminfo(s.get("meminfo", [])), ""
    disk_path, disk_free, mount = parse_df(s.get("df", []))
    return {
        "glmops_gpus": gpus,
        "glmops_driver": driver,
        "glmops_cuda": parse_cuda(s.get("cuda", [])) if gpus else None,
        "glmops_nvidia_smi_error": nvidia_error if "nvidia" in s and s["nvidia"] else None,
        "glmops_system": uname[0],
        "glmops_architecture": uname[1],
        "glmops_apple_silicon": mac and uname[1] == "arm64",
        "glmops_cpu": brand or None,
        "glmops_ram_mb": ram,
        "glmops_ram_available_mb": available,
        "glmops_disk_path": disk_path,
        "glmops_disk_mount": mount,
        "glmops_disk_free_mb": disk_free,
        "glmops_autodl": bool(s.get("turbo")) and s["turbo"][0].strip() == "present",
    }


def gather_script(disk_path: str, network_turbo_path: str) -> str:
    return GATHER.replace("{disk_path}", shlex.quote(disk_path)).replace("{turbo}", shlex.quote(network_turbo_path))


class GpuFactsModule(Module):
    name = "gpu_facts"
    doc = (
        "Gather what a ChatGLM3 deploy needs in one command and choose the profile: sets "
        "glmops_gpus (name, memory_total_mb, memory_free_mb per NVIDIA GPU, from nvidia-smi), "
        "glmops_driver, glmops_cuda, glmops_apple_silicon, glmops_ram_mb, glmops_ram_available_mb, "
        "glmops_disk_free_mb (at `disk_path`, or its nearest existing parent), glmops_autodl (the "
        "`network_turbo_path` file exists), glmops_profile and glmops_profile_reason (e.g. "
        "\"fp16: 23.7 GB free on RTX 3090\"). `profile: auto` picks fp16 with >= 14 GB free VRAM, "
        "fp16 with device_map auto over several smaller GPUs, int8 >= 9 GB, int4 >= 6 GB, mps on "
        "Apple Silicon, cpu with >= 32 GB RAM, else chatglm_cpp (llama_cpp only when asked); a requested profile the host cannot "
        "run (int4/int8 on mps, a GPU profile without an NVIDIA GPU) fails with the reason. Never changes anything."
    )
    args = {
        "profile": Arg("str", default="auto", choices=PROFILES, help="The profile asked for; auto chooses from the facts."),
        "disk_path": Arg("path", default="/", help="Where the deploy puts its files (free disk is measured there)."),
        "network_turbo_path": Arg("path", default="/etc/network_turbo", help="The file that marks an AutoDL host."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        result = ctx.run(gather_script(args["disk_path"], args["network_turbo_path"]), timeout=120)
        if "@@end" not in result.stdout:
            return ModuleResult(failed=True, msg=f"gathering GPU facts failed: {(result.stderr or result.stdout).strip()}")
        facts = parse_facts(result.stdout)
        try:
            choice = decide(facts, args["profile"])
        except ProfileError as exc:
            msg = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return ModuleResult(failed=True, msg=msg, data=dict(facts), facts=facts)
        facts.update(glmops_profile=choice.profile, glmops_profile_reason=choice.reason,
                     glmops_device_map=choice.device_map, glmops_profile_gpus=choice.gpus)
        return ModuleResult(msg=choice.reason, facts=facts, data=dict(facts))


MODULE = GpuFactsModule
