"""The autodl, cpu, mac and multigpu playbooks in check mode (--check --diff) against a loopback
host that looks like each target: stand-in `nvidia-smi` (an RTX 3090, two T4s), `uname`/`sysctl`
(an Apple Silicon Mac) first on the PATH of the real test sshd, an /etc/network_turbo at the path
the variable names. Asserts the profile gpu_facts chose and the api_server.yaml that would be
rendered. Nothing is installed or started (check mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, glmops, recap, results, write
from sshd import SshServer

STANDINS = {
    "rtx3090": {"nvidia-smi": """#!/bin/sh
case "$*" in *--query-gpu*) echo 'NVIDIA GeForce RTX 3090, 24576, 24268, 535.104.05';;
  *) echo '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |';; esac
"""},
    "2xt4": {"nvidia-smi": """#!/bin/sh
case "$*" in *--query-gpu*) echo 'Tesla T4, 15360, 11800, 535.104.05'; echo 'Tesla T4, 15360, 11900, 535.104.05';;
  *) echo '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |';; esac
"""},
    "mac": {"uname": """#!/bin/sh
case "$1" in -s) echo Darwin;; -m) echo arm64;; *) echo Darwin;; esac
""", "sysctl": """#!/bin/sh
echo 'hw.memsize: 34359738368'; echo 'machdep.cpu.brand_string: Apple M2 Pro'
"""},
    "cpu": {},
}


class LookalikeSshd(SshServer):
    """The test sshd with `bin_dir` first on the PATH of every session (stand-in commands)."""

    def __init__(self, state_dir: str, bin_dir: Path):
        super().__init__(state_dir, fast_shell=True)
        self.bin_dir = bin_dir

    def _config(self) -> str:
        path = f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        return super()._config().replace("SetEnv SHLVL=1", f"SetEnv SHLVL=1 PATH={path}")


@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("lookalike")
    for name, scripts in STANDINS.items():
        (root / "bins" / name).mkdir(parents=True)
        for command, text in scripts.items():
            path = write(root / "bins" / name / command, text)
            path.chmod(0o755)
    current = root / "current"
    server = LookalikeSshd(str(root / "sshd"), current)
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start the test sshd: {exc}", pytrace=False)
    model = root / "upload" / "chatglm3-6b"
    write(model / "config.json", '{"model_type": "chatglm"}\n')
    write(root / "network_turbo", "export http_proxy=http://10.0.0.7:12798 && export https_proxy=http://10.0.0.7:12798\n")

    def run(target: str, playbook: str, **extra_vars: Any) -> Any:
        if current.is_symlink():
            current.unlink()
        current.symlink_to(root / "bins" / target)
        hostvars = {**server.hostvars(), "deploy_dir": str(root / "deploy" / playbook), "api_keys": ["sk-check-secret"],
                    "model_source": "upload", "model_upload_from": str(model), "embedding_model": "none",
                    "network_turbo_file": str(root / ("network_turbo" if target == "rtx3090" else "no_network_turbo")),
                    "client_env_file": str(root / "client.env")}
        groups = {g: {"hosts": {"lookalike": hostvars}} for g in ("autodl", "cpu", "mac", "multigpu")}
        inventory = root / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": groups}}))
        args = [f"{k}={v}" for k, v in extra_vars.items()]
        return glmops("run", str(ROOT / "playbooks" / f"{playbook}.yml"), "-i", str(inventory), "--check", "--diff", "--json",
                      *(["-e", " ".join(args)] if args else []), timeout=300)

    run.root = root  # type: ignore[attr-defined]
    yield run
    server.stop()


def _profile(output: str) -> str:
    return results(output, "Gather GPU, memory and disk facts and choose the profile")["lookalike"]["msg"]


def _config(output: str) -> dict[str, Any]:
    """The api_server.yaml the run would write (from the template task's --diff)."""
    event = results(output, "Render api_server.yaml for the chosen profile")["lookalike"]
    assert event["status"] == "changed", event
    diff = event["diff"]
    text = diff[0]["after"] if isinstance(diff, list) else diff["after"]
    return yaml.safe_load(text)


def _ok(run: Any) -> None:
    failures = [(e["task"], e.get("msg")) for e in events(run.stdout) if e["event"] == "host_result" and e["status"] == "failed"]
    assert run.returncode == 0 and not failures, "\n".join(f"{t}: {m}" for t, m in failures) + run.stderr[-2000:]


def test_autodl_3090_gets_fp16_on_cuda(lookalike: Any) -> None:
    run = lookalike("rtx3090", "autodl")
    _ok(run)
    assert _profile(run.stdout).startswith("fp16: 23.7 GB free on") and "3090" in _profile(run.stdout)
    config = _config(run.stdout)
    assert (config["backend"], config["device"], config["dtype"], config["quantize"], config["device_map"]) == \
        ("transformers", "cuda", "float16", None, None)
    assert config["model_path"].endswith("/models/chatglm3-6b") and config["port"] == 6006
    # the AutoDL proxy was read (values hidden) and nothing of it or of the key is printed
    turbo = results(run.stdout, "Proxy in use")["lookalike"]["msg"]
    assert "network_turbo: 2 proxy variables" in turbo
    assert "10.0.0.7" not in run.stdout and "sk-check-secret" not in run.stdout
    # check mode: nothing was written
    assert not (lookalike.root / "deploy" / "autodl" / "api_server.yaml").exists()
    assert recap(run.stdout)["lookalike"]["failed"] == 0


def test_autodl_small_gpu_profiles(lookalike: Any) -> None:
    run = lookalike("rtx3090", "autodl", profile="int4")
    _ok(run)
    assert _config(run.stdout)["quantize"] == 4


def test_cpu_box_without_32gb_gets_chatglm_cpp(lookalike: Any) -> None:
    run = lookalike("cpu", "cpu")
    _ok(run)
    ram_gb = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    config = _config(run.stdout)
    if ram_gb >= 32:
        assert _profile(run.stdout).startswith("cpu:") and config["device"] == "cpu" and config["dtype"] == "float32"
    else:
        assert _profile(run.stdout).startswith("chatglm_cpp:")
        assert config["backend"] == "chatglm_cpp" and config["model_path"].endswith("chatglm3-ggml-q4_0.bin")
        assert config["tokenizer_path"].endswith("/models/chatglm3-6b")
        assert results(run.stdout, "Convert the model to GGML (once)")["lookalike"]["status"] == "changed"
    forced = lookalike("cpu", "cpu", profile="cpu")
    _ok(forced)
    assert (_config(forced.stdout)["device"], _config(forced.stdout)["dtype"]) == ("cpu", "float32")
    gguf = lookalike("cpu", "cpu", profile="llama_cpp")
    _ok(gguf)
    assert _profile(gguf.stdout).startswith("llama_cpp (requested)")
    assert (_config(gguf.stdout)["backend"], _config(gguf.stdout)["model_path"]) == ("llama_cpp", str(lookalike.root / "deploy" / "cpu" / "models" / "chatglm3-q4_0.gguf"))
    assert results(gguf.stdout, "Convert the model to GGUF (once)")["lookalike"]["status"] == "changed"


def test_mac_gets_mps_and_refuses_quantization(lookalike: Any) -> None:
    run = lookalike("mac", "mac")
    _ok(run)
    assert _profile(run.stdout).startswith("mps:")
    config = _config(run.stdout)
    assert (config["device"], config["dtype"], config["quantize"]) == ("mps", "float16", None)
    refused = lookalike("mac", "mac", profile="int4")
    assert refused.returncode == 2
    failed = results(refused.stdout, "Gather GPU, memory and disk facts and choose the profile")["lookalike"]
    assert failed["status"] == "failed" and "mps" in failed["msg"] and "CUDA" in failed["msg"], failed["msg"]


def test_multigpu_spreads_fp16_or_runs_vllm(lookalike: Any) -> None:
    run = lookalike("2xt4", "multigpu")
    _ok(run)
    assert "device_map auto" in _profile(run.stdout)
    config = _config(run.stdout)
    assert (config["backend"], config["device"], config["dtype"], config["device_map"]) == ("transformers", "cuda", "float16", "auto")
    vllm = lookalike("2xt4", "multigpu", profile="vllm")
    _ok(vllm)
    config = _config(vllm.stdout)
    assert (config["backend"], config["tensor_parallel_size"]) == ("vllm", 2)
