#!/usr/bin/env python3
"""The CPU backends side by side: llama_cpp and chatglm_cpp through `glmops serve` vs each engine's own Python API.

On ChatGLM3-6B's exact shapes with random q4_0 weights (made by scripts/make_tiny_ggml.py --shape 6b,
3.5 GB per format, deleted afterwards unless --keep): load time, prompt tokens/s, decode tokens/s and
peak RSS. Target: the API delivers >= 95 % of the engine's own decode rate. Usage:

    .venv/bin/python bench/cpu_backends.py [--tokens 64] [--work DIR] [--keep] [--shape 6b|tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT = "你好，给我讲一个故事，大概100字。" * 8  # ~100 prompt tokens with the bench tokenizer

NATIVE = r"""
import json, resource, sys, time
engine, path, tokens, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
started = time.perf_counter()
if engine == "llama_cpp":
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=2048, n_threads=__import__("os").cpu_count(), verbose=False)
    loaded = time.perf_counter() - started
    special = lambda t: llm.tokenize(t.encode(), add_bos=False, special=True)[0]
    ids = [special("[gMASK]"), special("sop"), special("<|user|>")] + llm.tokenize(b"\n", add_bos=False) + llm.tokenize(prompt.encode(), add_bos=False) + [special("<|assistant|>")]
    t0 = time.perf_counter(); times = []
    for count, token in enumerate(llm.generate(ids, temp=0.0, top_k=0, min_p=0.0, top_p=1.0)):
        times.append(time.perf_counter())
        if count + 1 >= tokens:
            break
else:
    import chatglm_cpp
    pipeline = chatglm_cpp.Pipeline(path, max_length=2048)
    loaded = time.perf_counter() - started
    messages = [chatglm_cpp.ChatMessage(role="user", content=prompt)]
    ids = pipeline.tokenizer.apply_chat_template(messages, 2048)
    config = chatglm_cpp._C.GenerationConfig(max_length=2048, max_new_tokens=tokens, max_context_length=2048, do_sample=False)
    t0 = time.perf_counter(); times = []
    for token in pipeline._stream_generate_ids(ids, None, config):  # what Pipeline.chat(stream=True) runs, token by token
        times.append(time.perf_counter())
print(json.dumps({"load_s": loaded, "prompt_tokens": len(ids), "first_s": times[0] - t0, "decode_tps": (len(times) - 1) / (times[-1] - times[0]),
                  "tokens": len(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def native(engine: str, path: Path, tokens: int) -> dict:
    done = subprocess.run([sys.executable, "-c", NATIVE, engine, str(path), str(tokens), PROMPT], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{engine}'s own API failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def served(engine: str, path: Path, tokens: int, work: Path) -> dict:
    import httpx
    import openai
    import yaml

    from tests.server.conftest import free_port

    port = free_port()
    config = work / f"{engine}.yaml"
    config.write_text(yaml.safe_dump({"backend": engine, "model_path": str(path), "port": port, "max_context": 2048}))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "glmops.server", "--config", str(config)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{engine}: the server exited")
            time.sleep(0.05)
        loaded = time.perf_counter() - started
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        spans = {}
        for count in (1, tokens):  # decode rate from the difference: chunk timing is no measure when text is held back
            t0 = time.perf_counter()
            reply = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": PROMPT}], max_tokens=count, temperature=0)
            spans[count] = (time.perf_counter() - t0, reply.usage)
        hwm = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
        (first, usage1), (whole, usage) = spans[1], spans[tokens]
        return {"load_s": loaded, "prompt_tokens": usage1.prompt_tokens, "first_s": first,
                "decode_tps": (usage.completion_tokens - 1) / (whole - first), "tokens": usage.completion_tokens, "peak_rss_mb": hwm / 1024}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--shape", choices=["6b", "tiny"], default="6b")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the model files (reused by the next run with the same --work)")
    parser.add_argument("--only", choices=["llama_cpp", "chatglm_cpp"])
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="glmops-cpu-bench-"))
    try:
        made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_ggml.py"), str(work), "--shape", args.shape],
                              capture_output=True, text=True, check=True).stdout.split()
        files = {"llama_cpp": Path(made[0]), "chatglm_cpp": Path(made[1])}
        rows = []
        for engine, path in files.items():
            if args.only and engine != args.only:
                continue
            own = native(engine, path, args.tokens)
            api = served(engine, path, args.tokens, work)
            for label, result in (("own Python API", own), ("glmops serve", api)):
                rows.append((engine, label, result))
                print(engine, label, json.dumps(result), flush=True)
            print(f"{engine}: API decode = {api['decode_tps'] / own['decode_tps']:.1%} of the engine's own", flush=True)
        print("\n| engine | through | load s | prompt tok/s | decode tok/s | peak RSS MB |\n| --- | --- | ---: | ---: | ---: | ---: |")
        for engine, label, r in rows:
            print(f"| {engine} | {label} | {r['load_s']:.2f} | {r['prompt_tokens'] / r['first_s']:.1f} | {r['decode_tps']:.2f} | {r['peak_rss_mb']:.0f} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
