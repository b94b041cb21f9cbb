#!/usr/bin/env python3
"""Side-by-side benchmark of the API server against raw `model.generate()`, on the tiny model.

In one run: raw generate() tokens/s and first-token latency in this process; the real server
process (same model, same greedy settings) measured through the official openai client: streaming
tokens/s, time to first token, and requests/s for short non-streaming requests at concurrency 1
and 8. Prints medians and ratios. Usage:

    .venv/bin/python bench/server.py [--tokens 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MESSAGES = [{"role": "user", "content": "你好，给我讲一个故事，大概100字"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_generator(model_dir: Path, tokens: int):
    """A function that measures one model.generate() with a streamer, greedy, no server: (tokens/s, first-token s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from glmops.server.backends.transformers_backend import TokenStreamer
    from glmops.server.prompt import build_prompt, to_turns

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tokenizer(build_prompt(to_turns(MESSAGES)), return_tensors="pt", add_special_tokens=False)["input_ids"]
    def measure() -> tuple[float, float]:
        streamer = TokenStreamer(tokenizer)
        started = time.perf_counter()
        thread = threading.Thread(target=lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                                                min_new_tokens=tokens, do_sample=False, streamer=streamer, pad_token_id=0))
        thread.start()
        first = None
        while streamer.queue.get() is not None:
            first = first or time.perf_counter() - started
        thread.join()
        elapsed = time.perf_counter() - started
        return streamer.count / elapsed, first or elapsed

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import openai
    import yaml

    work = Path(tempfile.mkdtemp(prefix="glmops-server-bench-"))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(work)], check=True, capture_output=True)
    model_dir = work / "tiny-chatglm3"
    port = free_port()
    (work / "api.yaml").write_text(yaml.safe_dump({"model_path": str(model_dir), "port": port, "max_context": 4096, "concurrency": 1, "queue_size": 64}))
    server = subprocess.Popen([sys.executable, "-m", "glmops.server", "--config", str(work / "api.yaml")], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raw = raw_generator(model_dir, args.tokens)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        rates, firsts, raw_rates, raw_firsts = [], [], [], []
        for _ in range(args.repeat):  # raw and API runs alternate, so both see the same machine noise
            rate, first_token = raw()
            raw_rates.append(rate)
            raw_firsts.append(first_token)
            started = time.perf_counter()
            first = None
            stream = client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=args.tokens, temperature=0,
                                                    stream=True, stream_options={"include_usage": True}, extra_body={"min_tokens": args.tokens})
            usage = None
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and first is None:
                    first = time.perf_counter() - started
                usage = chunk.usage or usage
            elapsed = time.perf_counter() - started
            rates.append(usage.completion_tokens / elapsed)
            firsts.append(first or elapsed)
        api_rate, api_first = statistics.median(rates), statistics.median(firsts)
        raw_rate, raw_first = statistics.median(raw_rates), statistics.median(raw_firsts)

        def short() -> None:
            client.chat.completions.create(model="chatglm3-6b", messages=MESSAGES, max_tokens=4, temperature=0)

        throughput = {}
        for concurrency in (1, 8):
            count = 40
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda _: short(), range(count)))
            throughput[concurrency] = count / (time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(10)
    print(f"\n{args.tokens} new tokens, greedy, tiny model, median of {args.repeat}")
    print(f"  raw generate():        {raw_rate:8.1f} tokens/s   first token {raw_first * 1000:7.1f} ms")
    print(f"  server (openai stream): {api_rate:8.1f} tokens/s   first token {api_first * 1000:7.1f} ms")
    print(f"  API / raw tokens/s: {api_rate / raw_rate * 100:.1f} %   TTFT overhead: {(api_first - raw_first) * 1000:.1f} ms")
    print(f"  short requests (4 tokens): {throughput[1]:.1f} req/s at concurrency 1, {throughput[8]:.1f} req/s at concurrency 8")
    print("\ntargets")
    print(f"  [{'met' if api_rate >= 0.95 * raw_rate else 'MISSED'}] API >= 95% of raw tokens/s")
    print(f"  [{'met' if api_first - raw_first <= 0.020 else 'MISSED'}] TTFT overhead <= 20 ms")


if __name__ == "__main__":
    main()
