#!/usr/bin/env python3
"""The CPU backends side by side: llama_cpp and chatglm_cpp through `glmops serve` vs each engine's own Python API.

On ChatGLM3-6B's exact shapes with random q4_0 weights (made by scripts/make_tiny_ggml.py --shape 6b,
3.5 GB per format, deleted afterwards unless --keep): load time, prompt tokens/s, decode tokens/s and
peak RSS. Target: the API delivers >= 95 % of the engine's own decode rate. Usage:

    .venv/bin/python bench/cpu_backends.py [--tokens 128] [--rounds 9] [--work DIR] [--keep] [--shape 6b|tiny]
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
PROMPT = "你好，给我讲一个故事，大概100字。"  # short: the decode is what is compared

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


def median(results: list[dict]) -> dict:
    """The run with the median decode rate."""
    return sorted(results, key=lambda r: r["decode_tps"])[len(results) // 2]


def native_once(engine: str, path: Path, tokens: int) -> dict:
    """The engine's own Python API in a fresh process, timed per token."""
    done = subprocess.run([sys.executable, "-c", NATIVE, engine, str(path), str(tokens), PROMPT], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{engine}'s own API failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Served:
    """The same file through `glmops serve` (started once) and the official openai client."""

    def __init__(self, engine: str, path: Path, work: Path):
        import httpx
        import yaml

        from tests.server.conftest import free_port

        self.engine, self.port = engine, free_port()
        config = work / f"{engine}.yaml"
        config.write_text(yaml.safe_dump({"backend": engine, "model_path": str(path), "port": self.port, "max_context": 2048}))
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "glmops.server", "--config", str(config)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"{engine}: the server exited")
            time.sleep(0.05)
        self.load_s = time.perf_counter() - started

    def once(self, tokens: int) -> dict:
        """One streamed request, timed per chunk."""
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", max_retries=0)
        t0 = time.perf_counter()
        arrivals, usage = [], None
        stream = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": PROMPT}], max_tokens=tokens,
                                                temperature=0, stream=True, stream_options={"include_usage": True})
        for chunk in stream:  # the bench model never picks a byte token, so no text is held back
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter())
            usage = chunk.usage or usage
        # tokens produced while the server's event loop waits for the GIL go out together (chatglm.cpp holds it
        # per token), so count tokens from usage: a first chunk of k tokens errs by (k - 1) / tokens
        hwm = next(int(line.split()[1]) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
        return {"prompt_tokens": usage.prompt_tokens, "first_s": arrivals[0] - t0, "chunks": len(arrivals), "tokens": usage.completion_tokens,
                "decode_tps": (usage.completion_tokens - 1) / (arrivals[-1] - arrivals[0]), "load_s": self.load_s, "peak_rss_mb": hwm / 1024}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def compare(engine: str, path: Path, tokens: int, work: Path, rounds: int) -> tuple[dict, dict]:
    """Rounds of (own API, then glmops serve), interleaved so both see the same machine; medians of each."""
    server = Served(engine, path, work)
    own, api = [], []
    try:
        for _ in range(rounds):
            own.append(native_once(engine, path, tokens))
            api.append(server.once(tokens))
    finally:
        server.stop()
    ratios = sorted(a["decode_tps"] / o["decode_tps"] for o, a in zip(own, api))
    return ({**median(own), "decode_runs": [round(r["decode_tps"], 2) for r in own]},
            {**median(api), "decode_runs": [round(r["decode_tps"], 2) for r in api], "paired_ratio": ratios[len(ratios) // 2]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9, help="rounds per engine, each one run of both ways; medians are reported")
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
            own, api = compare(engine, path, args.tokens, work, args.rounds)
            for label, result in (("own Python API", own), ("glmops serve", api)):
                rows.append((engine, label, result))
                print(engine, label, json.dumps(result), flush=True)
            print(f"{engine}: API decode = {api['decode_tps'] / own['decode_tps']:.1%} of the engine's own (medians); "
                  f"{api['paired_ratio']:.1%} (median of the rounds' ratios)", flush=True)
        print("\n| engine | through | load s | prompt tok/s | decode tok/s | peak RSS MB |\n| --- | --- | ---: | ---: | ---: | ---: |")
        for engine, label, r in rows:
            print(f"| {engine} | {label} | {r['load_s']:.2f} | {r['prompt_tokens'] / r['first_s']:.1f} | {r['decode_tps']:.2f} | {r['peak_rss_mb']:.0f} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
