"""`glmops doctor`: a preflight of the known ChatGLM3 deployment failures, each with its fix.

One round trip gathers everything (GPU facts, the daemon's status, the target venv's packages with
one `python -c`, the config, the model folders, the port); `diagnose` is a pure function of that,
tested case by case.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from glmops.layout import Layout
from glmops.modules import _detached
from glmops.modules.gpu_facts import gather_script, parse_facts
from glmops.profile import CPU_RAM_MIN_GB, NEEDS_GB, ProfileError, decide

TRANSFORMERS_PIN = "4.40.2"  # newer ones break ChatGLM3's remote code (ChatGLM3 #1299, #1321, #1324)
DISK_FOR_DEPLOY_GB = 25.0  # chat model 12 GB + embeddings 1.3 GB + venv with torch ~6 GB + room
DISK_LOW_GB = 2.0
CHATGLM_CPP_RAM_GB = 6.0

# Runs with the target venv's python (python3 when there is none yet). Prints one JSON object.
PROBE = r'''
import json, os, re, socket, sys
out = {"python": sys.version.split()[0], "prefix": sys.prefix, "packages": {}}
try:
    from importlib import metadata
except ImportError:
    metadata = None
for name in ("transformers", "torch", "cpm_kernels", "accelerate", "sentencepiece", "fastapi", "uvicorn", "chatglm-cpp", "vllm", "glmops"):
    try:
        out["packages"][name] = metadata.version(name) if metadata else None
    except Exception:
        out["packages"][name] = None
out["torch_cuda"] = None
try:
    import importlib.util
    spec = importlib.util.find_spec("torch")
    if spec and spec.origin:
        text = open(os.path.join(os.path.dirname(spec.origin), "version.py")).read()
        m = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]?([0-9.]+|None)", text, re.M)
        out["torch_cuda"] = None if not m or m.group(1) == "None" else m.group(1)
except Exception:
    pass
config_path, host, port, model_hint, embed_hint = sys.argv[1:6]
config = None
if os.path.exists(config_path):
    try:
        import yaml
        config = yaml.safe_load(open(config_path)) or {}
    except Exception as exc:
        config = {"_error": str(exc)}
out["config"] = config
def scan(path):
    if not path:
        return None
    info = {"path": path, "exists": os.path.isdir(path), "pointers": [], "weights": 0, "model_type": None}
    if not info["exists"]:
        return info
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            full = os.path.join(root, name)
            try:
                size = os.path.getsize(full)
            except OSError:
                continue
            if name.endswith((".safetensors", ".bin", ".pt", ".gguf", ".ggml", ".model")):
                info["weights"] += 1
            if size < 1024:
                with open(full, "rb") as f:
                    if f.read(48).startswith(b"version https://git-lfs.github.com/spec/v1"):
                        info["pointers"].append(os.path.relpath(full, path))
    try:
        cfg = json.load(open(os.path.join(path, "config.json")))
        info["model_type"] = cfg.get("model_type")
    except Exception:
        pass
    info["pointers"] = sorted(info["pointers"])
    return info
cfg = config if isinstance(config, dict) else {}
out["model"] = scan(cfg.get("model_path") or model_hint)
out["embedding"] = scan(cfg.get("embedding_model_path") or embed_hint)
port = int(cfg.get("port") or port)
s = socket.socket()
s.settimeout(2)
try:
    s.connect((host if host not in ("0.0.0.0", "::", "") else "127.0.0.1", port))
    out["port_listening"] = True
except Exception:
    out["port_listening"] = False
finally:
    s.close()
out["port"] = port
print(json.dumps(out))
'''


@dataclass
class Check:
    """One known failure, looked for."""

    id: str
    level: str  # ok | warn | fail | skip
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_script_for(layout: Layout, variables: dict[str, Any]) -> str:
    """The one command doctor runs on the host."""
    venv_python = shlex.quote(f"{layout.venv}/bin/python")
    args = " ".join(shlex.quote(str(a)) for a in (layout.config, layout.api_host, layout.api_port,
                                                  variables.get("model_path") or "", variables.get("embedding_model_path") or ""))
    turbo = str(variables.get("network_turbo_path") or "/etc/network_turbo")
    return (
        gather_script(layout.deploy_dir, turbo)
        + _detached.FUNCTIONS + _detached.status_lines(_detached.Paths(layout.pid_file, layout.log_file)) + "\n"
        + f"echo @@venv; py={venv_python}; if [ -x \"$py\" ]; then echo venv; else echo none; py=$(command -v python3); fi\n"
        + f"echo @@probe; [ -n \"$py\" ] && \"$py\" -c {shlex.quote(PROBE)} {args} 2>&1\n"
        + f"echo @@ss; command -v ss >/dev/null 2>&1 && ss -ltnpH 2>/dev/null | grep -E '[:.]{int(layout.api_port)}[[:space:]]' | head -n 3\n"
        + "echo @@done\n"
    )


def parse_gather(text: str) -> dict[str, Any]:
    """Everything diagnose() needs, from the gather script's output."""
    facts = parse_facts(text.partition("@@end\n")[0] + "@@end\n")
    rest = text.partition("@@end\n")[2]
    status = _detached.parse_status(rest)
    after = rest.partition("\n@@status-end\n")[2]
    venv = after.partition("@@venv\n")[2].partition("\n")[0].strip() == "venv"
    probe_text = after.partition("@@probe\n")[2].partition("@@ss\n")[0].strip()
    probe: dict[str, Any] | None = None
    for line in reversed(probe_text.splitlines()):
        if line.startswith("{"):
            try:
                probe = json.loads(line)
            except ValueError:
                probe = None
            break
    ss = after.partition("@@ss\n")[2].partition("@@done")[0].strip()
    return {"facts": facts, "running": status.running, "pid": status.pid, "venv": venv, "probe": probe,
            "probe_error": None if probe else (probe_text[-500:] or "no python on the host"), "port_holder": ss or None}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


@dataclass
class _Host:
    """What the checks read, derived once from parse_gather()'s data and the host's variables."""

    data: dict[str, Any]
    variables: dict[str, Any]
    layout: Layout

    def __post_init__(self) -> None:
        data, variables = self.data, self.variables
        self.facts: dict[str, Any] = data["facts"]
        self.probe: dict[str, Any] = data.get("probe") or {}
        self.packages: dict[str, Any] = self.probe.get("packages") or {}
        self.config: dict[str, Any] = self.probe.get("config") if isinstance(self.probe.get("config"), dict) else {}
        self.running = bool(data.get("running"))
        self.gpus: list[dict[str, Any]] = self.facts.get("glmops_gpus") or []
        self.mac = bool(self.facts.get("glmops_apple_silicon"))
        self.venv = self.layout.venv
        self.backend = str(self.config.get("backend") or variables.get("backend") or "transformers")
        self.device = str(self.config.get("device") or "auto")
        self.dtype = str(self.config.get("dtype") or "auto")
        self.quantize = self.config.get("quantize")
        self.model: dict[str, Any] | None = self.probe.get("model") or None
        self.is_chatglm = bool(self.model and self.model.get("model_type") == "chatglm")
        self.choice: Any = None
        self.profile = str(variables.get("profile") or "auto")


def diagnose(data: dict[str, Any], variables: dict[str, Any], layout: Layout) -> list[Check]:
    """The checks, from parse_gather()'s data and the host's variables (pure)."""
    host = _Host(data, variables, layout)
    checks: list[Check] = []
    for group in (_check_profile, _check_environment, _check_transformers, _check_torch, _check_precision,
                  _check_model_files, _check_embeddings, _check_memory, _check_disk, _check_port):
        checks += group(host)
    return checks


def _check_profile(host: _Host) -> list[Check]:
    """The profile a deploy would choose (and, with quantize in the config, the int profile it means)."""
    checks = []
    try:
        host.choice = decide(host.facts, host.profile)
        checks.append(Check("profile", "ok", host.choice.reason))
        host.profile = host.choice.profile
    except ProfileError as exc:
        checks.append(Check("profile", "fail", exc.message, exc.hint or ""))
    if host.quantize in (4, 8) and host.profile in ("fp16", "auto"):
        host.profile = f"int{host.quantize}"
    return checks


def _check_environment(host: _Host) -> list[Check]:
    checks = []
    if not host.data.get("venv"):
        checks.append(Check("venv", "warn", f"no venv at {host.venv} yet: the package checks use the host's python3",
                            "a deploy (glmops run playbooks/...) creates it"))
    if not host.probe:
        checks.append(Check("python", "fail", f"could not read the host's Python packages: {host.data.get('probe_error')}",
                            "install python3 on the host (a deploy needs it)"))
    return checks


def _check_transformers(host: _Host) -> list[Check]:
    """transformers missing, or too new for ChatGLM3's remote code."""
    if host.backend != "transformers" or not host.probe:
        return []
    version, venv, model = host.packages.get("transformers"), host.venv, host.model
    if not version:
        return [Check("transformers", "fail" if host.data.get("venv") else "skip", "transformers is not installed",
                      f"{venv}/bin/pip install transformers=={TRANSFORMERS_PIN}")]
    if _version_tuple(version) <= _version_tuple(TRANSFORMERS_PIN):
        return [Check("transformers", "ok", f"transformers {version}")]
    if model is not None and model.get("exists") and not host.is_chatglm:
        return [Check("transformers", "ok", f"transformers {version} (the model is {model.get('model_type')}, not ChatGLM3's remote code)")]
    text = (f"transformers {version} is too new for ChatGLM3's remote code (ChatGLM3 issues #1299 "
            "'_eos_token_tensor', #1321 'standardize_cache_format', #1324 'padding_side')")
    return [Check("transformers", "fail" if host.is_chatglm else "warn", text, f"{venv}/bin/pip install transformers=={TRANSFORMERS_PIN}")]


def _check_torch(host: _Host) -> list[Check]:
    """torch missing, or a CPU-only build on a GPU host."""
    if host.backend != "transformers" or not host.probe:
        return []
    version, venv = host.packages.get("torch"), host.venv
    if not version:
        return [Check("torch", "fail" if host.data.get("venv") else "skip", "torch is not installed",
                      f"{venv}/bin/pip install torch (the CUDA build on NVIDIA hosts)")]
    if host.gpus and not host.probe.get("torch_cuda"):
        cuda = host.facts.get("glmops_cuda") or "?"
        return [Check("torch", "fail", f"torch {version} is a CPU-only build, but the host has {len(host.gpus)} NVIDIA GPU(s)",
                      f"{venv}/bin/pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu121 "
                      f"(a CUDA build not newer than the driver's CUDA {cuda})")]
    cuda_build = host.probe.get("torch_cuda")
    return [Check("torch", "ok", f"torch {version}" + (f" (CUDA {cuda_build})" if cuda_build else ""))]


def _check_precision(host: _Host) -> list[Check]:
    """Half precision on the CPU, quantization on Apple Silicon, cpm_kernels for int4."""
    checks = []
    on_cpu = host.device == "cpu" or (host.device == "auto" and not host.gpus and not host.mac) or host.profile == "cpu"
    if host.backend == "transformers" and on_cpu and host.dtype in ("float16", "bfloat16"):
        checks.append(Check("dtype", "fail", f"dtype {host.dtype} on the CPU fails with \"addmm_impl_cpu_ not implemented for 'Half'\"",
                            "use dtype: float32 (about 32 GB RAM) or profile: chatglm_cpp"))
    if host.quantize in (4, 8) and (host.device == "mps" or host.mac):
        checks.append(Check("quantize", "fail", f"quantize: {host.quantize} on Apple Silicon: the quantization kernels are CUDA-only",
                            "remove quantize and use profile: mps (float16), or profile: chatglm_cpp"))
    # ChatGLM's int4 compresses and multiplies with cpm_kernels' CUDA kernels; its int8 is plain torch on CUDA
    # (measured: bench/README.md, "GPU check")
    if (host.quantize == 4 or host.profile == "int4") and host.probe and not host.packages.get("cpm_kernels"):
        needs = "int4" if host.profile == "int4" else "quantize 4"
        checks.append(Check("cpm_kernels", "fail", f"{needs} needs cpm_kernels, which is not installed", f"{host.venv}/bin/pip install cpm_kernels"))
    return checks


def _check_model_files(host: _Host) -> list[Check]:
    """The model folders: missing, or Git LFS pointer files instead of weights."""
    checks = []
    for kind, info in (("model", host.model), ("embedding_model", host.probe.get("embedding") or None)):
        if info is None:
            continue
        if not info.get("exists"):
            level = "fail" if host.running or host.config else "warn"
            checks.append(Check(kind, level, f"{info['path']} does not exist", "run the deploy (it fetches the model)"))
        elif info.get("pointers"):
            shown = ", ".join(info["pointers"][:5]) + (" ..." if len(info["pointers"]) > 5 else "")
            checks.append(Check(kind, "fail", f"{info['path']} holds Git LFS pointer files instead of weights: {shown}",
                                f"cd {shlex.quote(info['path'])} && git lfs install && git lfs pull (or run the deploy again to re-fetch)"))
        else:
            checks.append(Check(kind, "ok", f"{info['path']}: {info.get('weights', 0)} weight file(s), no LFS pointers"))
    return checks


def _check_embeddings(host: _Host) -> list[Check]:
    if str(host.variables.get("embedding_model") or "").lower() == "none":
        return [Check("embeddings", "ok", "no embedding model, on purpose (embedding_model: none)")]
    if host.probe and not (host.config.get("embedding_model_path") or host.variables.get("embedding_model_path")):
        return [Check("embeddings", "warn", "the embedding model path is unset: /v1/embeddings will fail (RemoteLLM's knowledge base needs it)",
                      "set embedding_model (deploy variable) or embedding_model_path in api_server.yaml; embedding_model: none to skip on purpose")]
    return []


def _check_memory(host: _Host) -> list[Check]:
    """Free GPU memory and RAM for the chosen profile."""
    if host.choice is None:
        return []
    checks, profile = [], host.profile
    free = [float(g.get("memory_free_mb") or 0) for g in host.gpus]
    if profile in NEEDS_GB and host.gpus:
        if host.running:
            checks.append(Check("vram", "skip", "the server is running and holds its GPU memory"))
        else:
            need = NEEDS_GB[profile]
            have = (sum(free) if host.choice.device_map == "auto" else max(free)) / 1024
            if have < need:
                checks.append(Check("vram", "fail", f"{profile} needs {need:.0f} GB of free GPU memory; {have:.1f} GB is free",
                                    "free the GPU (nvidia-smi shows what holds it) or choose a smaller profile (int8, int4)"))
            else:
                checks.append(Check("vram", "ok", f"{have:.1f} GB free GPU memory for {profile} ({need:.0f} GB)"))
    ram = float(host.facts.get("glmops_ram_mb") or 0) / 1024
    need_ram = CPU_RAM_MIN_GB if profile == "cpu" else CHATGLM_CPP_RAM_GB if profile in ("chatglm_cpp", "llama_cpp") else 0
    if need_ram and ram < need_ram:
        checks.append(Check("ram", "fail", f"{profile} needs about {need_ram + 1:.0f} GB RAM; the host has {ram:.1f} GB",
                            "use a larger machine, or profile: chatglm_cpp (about 4 GB)" if profile == "cpu" else "use a larger machine"))
    elif need_ram:
        checks.append(Check("ram", "ok", f"{ram:.1f} GB RAM for {profile}"))
    return checks


def _check_disk(host: _Host) -> list[Check]:
    disk = host.facts.get("glmops_disk_free_mb")
    if disk is None:
        return []
    model = host.model
    have_model = bool(model and model.get("exists") and model.get("weights") and not model.get("pointers"))
    need = DISK_LOW_GB if have_model else DISK_FOR_DEPLOY_GB
    where = host.facts.get("glmops_disk_path") or host.layout.deploy_dir
    if disk / 1024 < need:
        return [Check("disk", "fail", f"{disk / 1024:.1f} GB free at {where}; {'the logs and updates' if have_model else 'a deploy'} needs about {need:.0f} GB",
                      "free space, or set deploy_dir to a bigger disk (AutoDL: /root/autodl-tmp/glmops)")]
    return [Check("disk", "ok", f"{disk / 1024:.1f} GB free at {where}")]


def _check_port(host: _Host) -> list[Check]:
    port = host.probe.get("port", host.layout.api_port)
    if host.probe.get("port_listening") and not host.running:
        holder = f" ({host.data['port_holder']})" if host.data.get("port_holder") else ""
        return [Check("port", "fail", f"port {port} is already taken by another process{holder}",
                      "stop that process, or set api_port to a free port (then `glmops tunnel --remote-port`)")]
    if host.probe:
        return [Check("port", "ok", f"port {port} is {'used by the glmops server' if host.running else 'free'}")]
    return []


def exit_code(checks: list[Check]) -> int:
    return 2 if any(c.level == "fail" for c in checks) else 0
