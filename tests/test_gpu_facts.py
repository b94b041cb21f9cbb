"""gpu_facts: parsers against recorded output, then the module over the real sshd with a stand-in
`nvidia-smi` first on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glmops.modules import get_module
from glmops.modules.base import ModuleContext, validate_args
from glmops.modules.gpu_facts import parse_cuda, parse_df, parse_facts, parse_meminfo, parse_nvidia_smi, parse_sysctl

# Recorded: nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader,nounits
SMI_3090 = ["NVIDIA GeForce RTX 3090, 24576, 24259, 535.104.05", "rc=0"]
SMI_2T4 = ["Tesla T4, 15360, 15101, 470.182.03", "Tesla T4, 15360, 2811, 470.182.03", "rc=0"]
SMI_NO_DRIVER = ["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
                 "latest NVIDIA driver is installed and running.", "", "rc=9"]
SMI_NO_DEVICES = ["No devices were found", "rc=6"]
SMI_HEADER = ["CUDA Version: 12.2"]
MEMINFO = ["MemTotal:       65842148 kB", "MemAvailable:   61245012 kB"]
DF = ["path=/root/autodl-tmp",
      "Filesystem     1024-blocks      Used Available Capacity Mounted on",
      "/dev/vdb         52403200   1048576  51354624       3% /root/autodl-tmp"]
SYSCTL_M2 = ["hw.memsize: 34359738368", "machdep.cpu.brand_string: Apple M2 Pro"]


@pytest.mark.parametrize(("lines", "names", "free", "driver", "error"), [
    (SMI_3090, ["NVIDIA GeForce RTX 3090"], [24259], "535.104.05", None),
    (SMI_2T4, ["Tesla T4", "Tesla T4"], [15101, 2811], "470.182.03", None),
    (SMI_NO_DRIVER, [], [], None, "couldn't communicate with the NVIDIA driver"),
    (SMI_NO_DEVICES, [], [], None, "No devices were found"),
    ([], [], [], None, None),
], ids=["3090", "2x T4", "no driver", "no devices", "no nvidia-smi"])
def test_parse_nvidia_smi(lines, names, free, driver, error) -> None:
    gpus, found_driver, found_error = parse_nvidia_smi(lines)
    assert [g["name"] for g in gpus] == names and [g["memory_free_mb"] for g in gpus] == free
    assert [g["index"] for g in gpus] == list(range(len(names)))
    assert found_driver == driver
    assert (error in found_error) if error else found_error is None


def test_parse_name_with_a_comma() -> None:
    gpus, _, _ = parse_nvidia_smi(["NVIDIA A100-SXM4-80GB, MIG 1g.10gb, 81920, 81000, 535.54.03"])
    assert gpus[0]["name"] == "NVIDIA A100-SXM4-80GB, MIG 1g.10gb" and gpus[0]["memory_total_mb"] == 81920


def test_parse_small_units() -> None:
    assert parse_cuda(SMI_HEADER) == "12.2" and parse_cuda([]) is None
    assert parse_meminfo(MEMINFO) == (64298, 59809)
    assert parse_meminfo(["MemTotal: 2048 kB"]) == (2, 2)
    assert parse_df(DF) == ("/root/autodl-tmp", 50151, "/root/autodl-tmp")
    assert parse_df(["path=/x"]) == ("/x", None, None)
    assert parse_sysctl(SYSCTL_M2) == (32768, "Apple M2 Pro")


def _recorded(nvidia: list[str], *, system: str = "Linux", machine: str = "x86_64", turbo: bool = False) -> str:
    lines = ["@@nvidia", *nvidia, "@@cuda", *(SMI_HEADER if nvidia else []), "@@uname", system, machine,
             "@@sysctl", *(SYSCTL_M2 if system == "Darwin" else []), "@@meminfo", *(MEMINFO if system == "Linux" else []),
             "@@df", *DF, "@@turbo", *(["present"] if turbo else []), "@@end"]
    return "\n".join(lines) + "\n"


def test_parse_facts_for_each_kind_of_host() -> None:
    autodl = parse_facts(_recorded(SMI_3090, turbo=True))
    assert autodl["glmops_autodl"] and autodl["glmops_cuda"] == "12.2" and autodl["glmops_driver"] == "535.104.05"
    assert autodl["glmops_ram_mb"] == 64298 and autodl["glmops_disk_free_mb"] == 50151 and not autodl["glmops_apple_silicon"]
    none = parse_facts(_recorded(SMI_NO_DRIVER))
    assert none["glmops_gpus"] == [] and none["glmops_cuda"] is None and "NVIDIA driver" in none["glmops_nvidia_smi_error"]
    mac = parse_facts(_recorded([], system="Darwin", machine="arm64"))
    assert mac["glmops_apple_silicon"] and mac["glmops_ram_mb"] == 32768 and mac["glmops_cpu"] == "Apple M2 Pro"
    assert mac["glmops_nvidia_smi_error"] is None


STAND_IN = """#!/bin/sh
case "$*" in
  *--query-gpu*) printf '%s\\n' {csv} ;;
  *) echo '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2     |' ;;
esac
"""




def _run(conn, bin_dir: Path, **args):
    """The module with nvidia-smi from bin_dir; the AutoDL marker file is under bin_dir's folder (absent unless
    a test writes it), never the machine's own /etc/network_turbo."""
    args.setdefault("network_turbo_path", str(bin_dir.parent / "network_turbo"))
    module = get_module("gpu_facts")
    ctx = ModuleContext(conn=conn, host="target", environment={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"})
    return module.run(ctx, validate_args(module, args, final=True))


def _stand_in(tmp_path: Path, *csv_lines: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(STAND_IN.replace("{csv}", " ".join(f"'{line}'" for line in csv_lines)))
    script.chmod(0o755)
    return bin_dir


def test_module_on_a_3090_host(conn, tmp_path: Path) -> None:
    bin_dir = _stand_in(tmp_path, SMI_3090[0])
    turbo = tmp_path / "network_turbo"
    turbo.write_text("export http_proxy=http://10.0.0.1:12798\n")
    result = _run(conn, bin_dir, disk_path=str(tmp_path / "not" / "yet"), network_turbo_path=str(turbo))
    facts = result.facts
    assert not result.failed and not result.changed
    assert facts["glmops_gpus"] == [{"index": 0, "name": "NVIDIA GeForce RTX 3090", "memory_total_mb": 24576, "memory_free_mb": 24259}]
    assert facts["glmops_cuda"] == "12.2" and facts["glmops_autodl"] and facts["glmops_profile"] == "fp16"
    assert facts["glmops_profile_reason"] == "fp16: 23.7 GB free on RTX 3090" == result.msg
    assert facts["glmops_disk_path"] == str(tmp_path)  # the nearest existing parent
    st = os.statvfs(tmp_path)
    assert abs(facts["glmops_disk_free_mb"] - st.f_bavail * st.f_frsize // 2**20) < 512
    assert facts["glmops_ram_mb"] > 100 and result.data["glmops_profile"] == "fp16"


def test_module_on_two_small_gpus_and_on_a_host_without_one(conn, tmp_path: Path) -> None:
    bin_dir = _stand_in(tmp_path, "NVIDIA GeForce RTX 3060, 12288, 11800, 535.54.03", "NVIDIA GeForce RTX 3060, 12288, 11800, 535.54.03")
    two = _run(conn, bin_dir)
    assert two.facts["glmops_profile"] == "fp16" and two.facts["glmops_device_map"] == "auto"
    assert not two.facts["glmops_autodl"]
    refused = _run(conn, bin_dir, profile="mps")
    assert refused.failed and "Apple Silicon" in refused.msg
    (bin_dir / "nvidia-smi").unlink()
    none = _run(conn, bin_dir)
    assert none.facts["glmops_gpus"] == [] and none.facts["glmops_profile"] in ("cpu", "chatglm_cpp")
    assert "no NVIDIA GPU" in none.facts["glmops_profile_reason"]
