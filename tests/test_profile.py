"""choose_profile: one behaviour per case, from facts to (profile, reason)."""

from __future__ import annotations

import pytest

from glmops.profile import ProfileError, choose_profile, decide


def gpu(name: str, free_gb: float, total_gb: float = 24.0) -> dict:
    return {"name": name, "memory_total_mb": int(total_gb * 1024), "memory_free_mb": int(free_gb * 1024)}


RTX3090 = gpu("NVIDIA GeForce RTX 3090", 23.7)
T4 = gpu("Tesla T4", 14.7, 15.0)
RTX3060 = gpu("NVIDIA GeForce RTX 3060", 11.5, 12.0)
GTX1060 = gpu("NVIDIA GeForce GTX 1060 6GB", 5.8, 6.0)

CASES = [
    # (id, facts, requested, profile, words in the reason)
    ("3090 fp16", {"glmops_gpus": [RTX3090], "glmops_ram_mb": 64 * 1024}, "auto", "fp16", ["fp16: 23.7 GB free on RTX 3090"]),
    ("exactly 14 GB is fp16", {"gpus": [gpu("A", 14.0)]}, "auto", "fp16", ["14.0 GB free"]),
    ("just under 14 GB is int8", {"gpus": [gpu("A", 13.9)]}, "auto", "int8", ["int8: 13.9 GB", "fp16 needs 14"]),
    ("2x T4: one is enough", {"gpus": [T4, T4]}, "auto", "fp16", ["14.7 GB free on Tesla T4"]),
    ("2x 3060: device_map auto", {"gpus": [RTX3060, RTX3060]}, "auto", "fp16", ["device_map auto", "2x RTX 3060", "23.0 GB"]),
    ("one 3060: int8", {"gpus": [RTX3060]}, "auto", "int8", ["11.5 GB free on RTX 3060"]),
    ("busy 3090: int4", {"gpus": [gpu("NVIDIA GeForce RTX 3090", 7.0)]}, "auto", "int4", ["int4: 7.0 GB", "int8 needs 9"]),
    ("6 GB card, 64 GB RAM: cpu", {"gpus": [GTX1060], "ram_mb": 64 * 1024}, "auto", "cpu", ["below 6 GB", "64.0 GB RAM"]),
    ("no GPU, 32 GB machine: cpu", {"gpus": [], "ram_mb": 31 * 1024 + 300}, "auto", "cpu", ["no NVIDIA GPU", "float32"]),
    ("no GPU, 16 GB: chatglm_cpp", {"gpus": [], "ram_mb": 16 * 1024}, "auto", "chatglm_cpp", ["16.0 GB RAM", "q4_0"]),
    ("nothing known: chatglm_cpp", {}, "auto", "chatglm_cpp", ["no NVIDIA GPU"]),
    ("Mac: mps", {"apple_silicon": True, "ram_mb": 32 * 1024}, "auto", "mps", ["Apple Silicon", "32.0 GB unified"]),
    ("Mac requested cpu", {"apple_silicon": True, "ram_mb": 16 * 1024}, "cpu", "cpu", ["only 16.0 GB RAM"]),
    ("Mac requested chatglm_cpp", {"apple_silicon": True}, "chatglm_cpp", "chatglm_cpp", ["requested"]),
    ("requested llama_cpp on a 3090", {"gpus": [RTX3090], "ram_mb": 16 * 1024}, "llama_cpp", "llama_cpp", ["GGUF", "llama.cpp", "16.0 GB RAM"]),
    ("requested int4 on a 3090", {"gpus": [RTX3090]}, "int4", "int4", ["int4 (requested): 23.7 GB free"]),
    ("requested fp16, too small", {"gpus": [RTX3060]}, "fp16", "fp16", ["only 11.5 GB", "out of memory"]),
    ("requested vllm over 2 GPUs", {"gpus": [RTX3060, RTX3060]}, "vllm", "vllm", ["tensor parallel over 2", "2x RTX 3060"]),
    ("requested cpu on a GPU host", {"gpus": [RTX3090], "ram_mb": 64 * 1024}, "CPU", "cpu", ["cpu (requested)"]),
]


@pytest.mark.parametrize(("facts", "requested", "profile", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choose_profile(facts: dict, requested: str, profile: str, words: list[str]) -> None:
    chosen, reason = choose_profile(facts, requested)
    assert chosen == profile
    for word in words:
        assert word in reason, (word, reason)


REFUSED = [
    ("int4 on mps", {"apple_silicon": True}, "int4", ["CUDA-only", "profile: mps"]),
    ("int8 on mps", {"glmops_apple_silicon": True, "glmops_gpus": []}, "int8", ["cpm_kernels", "chatglm_cpp"]),
    ("fp16 without a GPU", {"ram_mb": 8192}, "fp16", ["needs an NVIDIA GPU", "8.0 GB"]),
    ("vllm on a Mac", {"apple_silicon": True}, "vllm", ["Apple Silicon has no CUDA"]),
    ("mps on Linux", {"gpus": [RTX3090]}, "mps", ["needs Apple Silicon"]),
    ("unknown profile", {}, "fp32", ["unknown profile", "auto, fp16"]),
]


@pytest.mark.parametrize(("facts", "requested", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_impossible_requests_are_refused_with_the_reason(facts: dict, requested: str, words: list[str]) -> None:
    with pytest.raises(ProfileError) as caught:
        choose_profile(facts, requested)
    text = str(caught.value)
    for word in words:
        assert word in text, (word, text)
    assert caught.value.field == "profile"


def test_placement() -> None:
    assert decide({"gpus": [RTX3060, RTX3060]}).device_map == "auto"
    assert decide({"gpus": [GTX1060, RTX3090]}).gpus == [1]  # the GPU with the most free memory
    assert decide({"gpus": [RTX3090]}).device_map is None
