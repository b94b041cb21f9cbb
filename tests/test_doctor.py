"""doctor: each known failure from gathered data, one case each (pure), and the gather output parser."""

from __future__ import annotations

from typing import Any

import pytest

from glmops.doctor import diagnose, exit_code, parse_gather
from glmops.layout import Layout

LAYOUT = Layout("/root/autodl-tmp/glmops")
RTX3090 = {"index": 0, "name": "NVIDIA GeForce RTX 3090", "memory_total_mb": 24576, "memory_free_mb": 24259}
GOOD_MODEL = {"path": "/m/chatglm3-6b", "exists": True, "pointers": [], "weights": 7, "model_type": "chatglm"}
GOOD_EMBED = {"path": "/m/bge", "exists": True, "pointers": [], "weights": 1, "model_type": "bert"}


def data(**changes: Any) -> dict[str, Any]:
    """A healthy AutoDL 3090 host before the server starts; `changes` patch it (dotted keys go one level down)."""
    base: dict[str, Any] = {
        "facts": {"glmops_gpus": [RTX3090], "glmops_cuda": "12.2", "glmops_ram_mb": 64 * 1024, "glmops_disk_free_mb": 50 * 1024,
                  "glmops_disk_path": "/root/autodl-tmp", "glmops_apple_silicon": False},
        "running": False, "pid": None, "venv": True, "port_holder": None, "probe_error": None,
        "probe": {"packages": {"transformers": "4.40.2", "torch": "2.1.2+cu121", "cpm_kernels": None, "accelerate": "0.30.0"},
                  "torch_cuda": "12.1", "config": {"model_path": "/m/chatglm3-6b", "embedding_model_path": "/m/bge", "port": 6006},
                  "model": dict(GOOD_MODEL), "embedding": dict(GOOD_EMBED), "port": 6006, "port_listening": False},
    }
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            if "." in inner:
                middle, leaf = inner.split(".", 1)
                base[outer][middle] = {**base[outer][middle], leaf: value}
            else:
                base[outer][inner] = value
        else:
            base[key] = value
    return base


CASES = [
    # (id, data changes, host variables, check id, level, words in message + fix)
    ("healthy", {}, {}, "profile", "ok", ["fp16: 23.7 GB free on RTX 3090"]),
    ("transformers too new", {"probe.packages": {"transformers": "4.41.0", "torch": "2.1.2"}}, {}, "transformers", "fail",
     ["4.41.0 is too new", "#1299", "#1321", "#1324", "transformers==4.40.2"]),
    ("transformers pinned", {}, {}, "transformers", "ok", ["4.40.2"]),
    ("transformers too new, not a ChatGLM model", {"probe.packages": {"transformers": "4.57.6", "torch": "2.1"},
                                                   "probe.model": {**GOOD_MODEL, "model_type": "llama"}}, {}, "transformers", "ok", ["llama"]),
    ("CPU-only torch on a GPU host", {"probe.torch_cuda": None, "probe.packages": {"transformers": "4.40.2", "torch": "2.1.2+cpu"}}, {},
     "torch", "fail", ["CPU-only build", "1 NVIDIA GPU", "download.pytorch.org/whl/cu121", "CUDA 12.2"]),
    ("half on CPU", {"facts.glmops_gpus": [], "probe.config": {"model_path": "/m", "dtype": "float16", "device": "cpu"}}, {},
     "dtype", "fail", ["addmm_impl_cpu_", "float32", "32 GB"]),
    ("quantize on mps", {"facts.glmops_gpus": [], "facts.glmops_apple_silicon": True,
                         "probe.config": {"model_path": "/m", "quantize": 4, "device": "mps"}}, {}, "quantize", "fail", ["CUDA-only", "mps"]),
    ("cpm_kernels missing for int4", {}, {"profile": "int4"}, "cpm_kernels", "fail", ["int4 needs cpm_kernels", "pip install cpm_kernels"]),
    ("cpm_kernels missing for quantize 4", {"probe.config": {"model_path": "/m", "quantize": 4}}, {}, "cpm_kernels", "fail", ["int4 needs cpm_kernels"]),
    ("LFS pointers", {"probe.model": {**GOOD_MODEL, "pointers": ["a.safetensors", "b.safetensors"]}}, {}, "model", "fail",
     ["Git LFS pointer files", "a.safetensors", "git lfs pull"]),
    ("model not fetched yet", {"probe.model": {**GOOD_MODEL, "exists": False}, "probe.config": None}, {"model_path": "/m"}, "model", "warn",
     ["does not exist", "deploy"]),
    ("too little VRAM", {"facts.glmops_gpus": [{**RTX3090, "memory_free_mb": 12000}]}, {"profile": "fp16"}, "vram", "fail",
     ["fp16 needs 14 GB", "11.7 GB is free", "int8"]),
    ("VRAM held by our own server", {"running": True, "facts.glmops_gpus": [{**RTX3090, "memory_free_mb": 900}]}, {"profile": "fp16"},
     "vram", "skip", ["holds its GPU memory"]),
    ("too little RAM for cpu", {"facts.glmops_gpus": [], "facts.glmops_ram_mb": 16 * 1024}, {"profile": "cpu"}, "ram", "fail",
     ["cpu needs about 32 GB", "16.0 GB", "chatglm_cpp"]),
    ("too little disk for a deploy", {"facts.glmops_disk_free_mb": 10 * 1024, "probe.model": {**GOOD_MODEL, "exists": False}}, {},
     "disk", "fail", ["10.0 GB free at /root/autodl-tmp", "25 GB", "deploy_dir"]),
    ("disk fine once the model is there", {"facts.glmops_disk_free_mb": 10 * 1024}, {}, "disk", "ok", ["10.0 GB free"]),
    ("port taken", {"probe.port_listening": True, "port_holder": 'LISTEN 0 128 127.0.0.1:6006 users:(("jupyter",pid=77))'}, {},
     "port", "fail", ["port 6006 is already taken", "jupyter", "api_port"]),
    ("port ours", {"probe.port_listening": True, "running": True}, {}, "port", "ok", ["used by the glmops server"]),
    ("embedding path unset", {"probe.config": {"model_path": "/m/chatglm3-6b"}, "probe.embedding": None}, {}, "embeddings", "warn",
     ["embedding model path is unset", "embedding_model: none"]),
    ("embeddings off on purpose", {"probe.config": {"model_path": "/m"}, "probe.embedding": None}, {"embedding_model": "none"},
     "embeddings", "ok", ["on purpose"]),
    ("int4 on mps refused", {"facts.glmops_gpus": [], "facts.glmops_apple_silicon": True}, {"profile": "int4"}, "profile", "fail",
     ["CUDA-only", "profile: mps"]),
    ("no venv yet", {"venv": False}, {}, "venv", "warn", ["no venv at /root/autodl-tmp/glmops/venv"]),
    ("no python at all", {"probe": None, "probe_error": "sh: python3: not found"}, {}, "python", "fail", ["python3: not found"]),
]


@pytest.mark.parametrize(("changes", "variables", "check_id", "level", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diagnose(changes: dict, variables: dict, check_id: str, level: str, words: list[str]) -> None:
    checks = {c.id: c for c in diagnose(data(**changes), variables, LAYOUT)}
    assert check_id in checks, sorted(checks)
    check = checks[check_id]
    assert check.level == level, check
    text = check.message + " " + check.fix
    for word in words:
        assert word in text, (word, text)
    if level == "fail":
        assert check.fix, "every failure comes with its fix"


def test_int8_does_not_need_cpm_kernels() -> None:
    """ChatGLM's int8 is plain torch on CUDA (measured on an H200, bench/README.md "GPU check"); only int4 needs cpm_kernels."""
    for changes, variables in (({"probe.config": {"model_path": "/m", "quantize": 8}}, {}), ({}, {"profile": "int8"})):
        assert "cpm_kernels" not in {c.id for c in diagnose(data(**changes), variables, LAYOUT)}


def test_a_healthy_host_passes() -> None:
    checks = diagnose(data(), {}, LAYOUT)
    assert exit_code(checks) == 0 and {c.level for c in checks} == {"ok"}
    assert exit_code(diagnose(data(**{"probe.port_listening": True}), {}, LAYOUT)) == 2


def test_parse_gather() -> None:
    text = ("@@nvidia\nNVIDIA GeForce RTX 3090, 24576, 24259, 535.104.05\nrc=0\n@@cuda\nCUDA Version: 12.2\n@@uname\nLinux\nx86_64\n"
            "@@sysctl\n@@meminfo\nMemTotal: 65842148 kB\n@@df\npath=/root\nFilesystem 1024-blocks Used Available Capacity Mounted on\n"
            "/dev/vdb 52403200 1048576 51354624 3% /root\n@@turbo\npresent\n@@end\n"
            "pid=42\nrunning=1\nuptime=7\n@@script\nexec glmops serve\n\n@@status-end\n"
            "@@venv\nvenv\n@@probe\nsome warning\n{\"packages\": {\"torch\": \"2.1.2\"}, \"port\": 6006}\n@@ss\n@@done\n")
    parsed = parse_gather(text)
    assert parsed["running"] and parsed["pid"] == 42 and parsed["venv"] and parsed["port_holder"] is None
    assert parsed["probe"]["packages"]["torch"] == "2.1.2" and parsed["facts"]["glmops_autodl"]
    assert parsed["facts"]["glmops_gpus"][0]["memory_free_mb"] == 24259
    broken = parse_gather(text.replace('{"packages": {"torch": "2.1.2"}, "port": 6006}', "Traceback: boom"))
    assert broken["probe"] is None and "boom" in broken["probe_error"]
