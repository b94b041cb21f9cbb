"""Which way to run ChatGLM3-6B on a host, from its facts: a pure function, no I/O.

`profile: auto` picks, in order (sizes in GiB, as nvidia-smi's MiB / 1024):
- fp16 on one NVIDIA GPU with >= 14 GB free (the model plus the embedding model);
- fp16 over several GPUs with device_map auto when none has 14 GB free but together they have;
- int8 with >= 9 GB free on one GPU, int4 with >= 6 GB;
- mps on Apple Silicon;
- cpu (float32) with >= 32 GB RAM (a machine sold as 32 GB: MemTotal >= 31 GiB);
- else chatglm_cpp (q4_0 GGML, about 4 GB RAM).
llama_cpp (a GGUF conversion served by llama.cpp, about 4 GB RAM for q4_0) is chosen by request only.
A requested profile is checked against the host: quantization (int8/int4) and vllm need CUDA,
mps needs Apple Silicon; such a request is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from glmops.errors import GlmopsError

PROFILES = ("auto", "fp16", "int8", "int4", "cpu", "chatglm_cpp", "llama_cpp", "vllm", "mps")
FP16_MIN_GB = 14.0
INT8_MIN_GB = 9.0
INT4_MIN_GB = 6.0
CPU_RAM_MIN_GB = 31.0  # "32 GB" machines report a little less
GPU_PROFILES = ("fp16", "int8", "int4", "vllm")
NEEDS_GB = {"fp16": FP16_MIN_GB, "int8": INT8_MIN_GB, "int4": INT4_MIN_GB, "vllm": FP16_MIN_GB}


class ProfileError(GlmopsError):
    """The requested profile cannot run on this host."""


@dataclass
class Choice:
    """The chosen profile, why, and how the model is placed."""

    profile: str
    reason: str
    device_map: str | None = None  # "auto" when the model is spread over several GPUs
    gpus: list[int] = field(default_factory=list)  # indexes of the GPUs it uses


def _fact(facts: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """facts[glmops_NAME], else facts[NAME]: accepts the module's facts and plain dicts alike."""
    if f"glmops_{name}" in facts:
        return facts[f"glmops_{name}"]
    return facts.get(name, default)


def gb(mb: float) -> float:
    return mb / 1024


def _short(name: str) -> str:
    for prefix in ("NVIDIA GeForce ", "NVIDIA ", "GeForce "):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _describe(gpus: list[Mapping[str, Any]]) -> str:
    names = [_short(str(g.get("name", "GPU"))) for g in gpus]
    if len(set(names)) == 1 and len(names) > 1:
        return f"{len(names)}x {names[0]}"
    return " + ".join(names)


def decide(facts: Mapping[str, Any], requested: str = "auto") -> Choice:
    """The profile for a host with these facts (see the module docstring). Raises ProfileError."""
    requested = (requested or "auto").strip().lower()
    if requested not in PROFILES:
        raise ProfileError(f"unknown profile {requested!r}", field="profile", hint="choose one of: " + ", ".join(PROFILES))
    gpus = [g for g in (_fact(facts, "gpus") or []) if isinstance(g, Mapping)]
    ram_gb = gb(float(_fact(facts, "ram_mb") or 0))
    mac = bool(_fact(facts, "apple_silicon", False))
    free = [float(g.get("memory_free_mb") or 0) for g in gpus]
    best = max(range(len(gpus)), key=lambda i: free[i]) if gpus else None

    if mac and requested in ("int8", "int4"):
        raise ProfileError(
            f"{requested} quantization is not possible on Apple Silicon: its kernels (cpm_kernels) are CUDA-only",
            field="profile", hint="use profile: mps (float16 on the Mac's GPU), or chatglm_cpp for a quantized model")
    if requested in GPU_PROFILES and not gpus:
        where = "Apple Silicon has no CUDA" if mac else "no NVIDIA GPU was found (nvidia-smi)"
        hint = "use profile: mps" if mac else f"use profile: cpu (needs ~32 GB RAM; this host has {ram_gb:.1f} GB) or chatglm_cpp"
        raise ProfileError(f"profile {requested} needs an NVIDIA GPU, but {where}", field="profile", hint=hint)
    if requested == "mps" and not mac:
        raise ProfileError("profile mps needs Apple Silicon (macOS on arm64); this host is not one", field="profile",
                           hint="use profile: auto")

    if requested == "auto":
        if best is not None:
            name = _short(str(gpus[best].get("name", "GPU")))
            if free[best] >= FP16_MIN_GB * 1024:
                return Choice("fp16", f"fp16: {gb(free[best]):.1f} GB free on {name}", gpus=[best])
            if len(gpus) > 1 and sum(free) >= FP16_MIN_GB * 1024:
                return Choice("fp16", f"fp16 over {len(gpus)} GPUs with device_map auto: {gb(sum(free)):.1f} GB free "
                              f"together on {_describe(gpus)} (none has {FP16_MIN_GB:.0f} GB alone)",
                              device_map="auto", gpus=list(range(len(gpus))))
            if free[best] >= INT8_MIN_GB * 1024:
                return Choice("int8", f"int8: {gb(free[best]):.1f} GB free on {name} (fp16 needs {FP16_MIN_GB:.0f} GB)", gpus=[best])
            if free[best] >= INT4_MIN_GB * 1024:
                return Choice("int4", f"int4: {gb(free[best]):.1f} GB free on {name} (int8 needs {INT8_MIN_GB:.0f} GB)", gpus=[best])
        if mac:
            return Choice("mps", f"mps: Apple Silicon with {ram_gb:.1f} GB unified memory")
        gpu_note = (f"{gb(free[best]):.1f} GB free on {_short(str(gpus[best].get('name')))} is below {INT4_MIN_GB:.0f} GB"
                    if best is not None else "no NVIDIA GPU")
        if ram_gb >= CPU_RAM_MIN_GB:
            return Choice("cpu", f"cpu: {gpu_note}; {ram_gb:.1f} GB RAM is enough for float32 (32 GB)")
        return Choice("chatglm_cpp", f"chatglm_cpp: {gpu_note}; {ram_gb:.1f} GB RAM is below the 32 GB float32 needs, "
                      "so the q4_0 GGML model (about 4 GB)")

    # An explicit request: say what it runs on, and what may be short (doctor checks sizes in detail).
    if requested in GPU_PROFILES:
        name = _short(str(gpus[best].get("name", "GPU")))  # type: ignore[index]
        if requested == "vllm":
            return Choice("vllm", f"vllm (requested): tensor parallel over {len(gpus)} GPU(s), {_describe(gpus)}, "
                          f"{gb(sum(free)):.1f} GB free together", gpus=list(range(len(gpus))))
        need = NEEDS_GB[requested]
        if free[best] >= need * 1024:  # type: ignore[index]
            return Choice(requested, f"{requested} (requested): {gb(free[best]):.1f} GB free on {name}", gpus=[best])  # type: ignore[index]
        if len(gpus) > 1 and sum(free) >= need * 1024:
            return Choice(requested, f"{requested} (requested) over {len(gpus)} GPUs with device_map auto: "
                          f"{gb(sum(free)):.1f} GB free together", device_map="auto", gpus=list(range(len(gpus))))
        return Choice(requested, f"{requested} (requested): only {gb(free[best]):.1f} GB free on {name}, "  # type: ignore[index]
                      f"{need:.0f} GB needed; loading may run out of memory", gpus=[best])  # type: ignore[list-item]
    if requested == "mps":
        return Choice("mps", f"mps (requested): Apple Silicon with {ram_gb:.1f} GB unified memory")
    if requested == "cpu":
        note = "" if ram_gb >= CPU_RAM_MIN_GB else f"; only {ram_gb:.1f} GB RAM, float32 needs 32 GB"
        return Choice("cpu", f"cpu (requested): float32 with {ram_gb:.1f} GB RAM{note}")
    if requested == "llama_cpp":
        return Choice("llama_cpp", f"llama_cpp (requested): a GGUF conversion served by llama.cpp with {ram_gb:.1f} GB RAM")
    return Choice("chatglm_cpp", f"chatglm_cpp (requested): q4_0 GGML model with {ram_gb:.1f} GB RAM")


def choose_profile(facts: Mapping[str, Any], requested: str = "auto") -> tuple[str, str]:
    """(profile, reason) for a host with these facts; raises ProfileError for an impossible request."""
    choice = decide(facts, requested)
    return choice.profile, choice.reason
