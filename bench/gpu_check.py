#!/usr/bin/env python3
"""GPU check: ChatGLM3's own model code served by `glmops serve` on CUDA, one table row per path.

    python bench/gpu_check.py [--checkpoint DIR] [--embedding DIR] [--out FILE] [--readme bench/README.md]

On a machine with CUDA (nothing is downloaded): makes the ChatGLM3-format tiny checkpoint
(scripts/make_tiny_chatglm.py, unless --checkpoint) and the tiny bge model (scripts/make_tiny_models.py,
unless --embedding), then starts the real server process once per row and asks it over HTTP:

    fp16         dtype float16 on cuda; a greedy answer, compared with the checkpoint's own generate() on cuda
    embeddings   /v1/embeddings on cuda, beside the fp16 chat model
    8 streams    8 concurrent streamed chats on the fp16 server: every stream ends with [DONE]
    int8, int4   ChatGLM's own quantize(8|4) (its cpm_kernels CUDA kernels)
    device_map   device_map: auto (accelerate places the layers)
    vllm         the vllm profile, when vllm is installed

and prints one table (load time, GPU memory in use after load, decode tokens/s, pass/fail with the reason),
written also to --out and into --readme's "## GPU check" section. It needs torch with CUDA, transformers
4.40.x (ChatGLM3's code does not run on newer ones), sentencepiece, safetensors, fastapi, uvicorn and httpx;
cpm_kernels for the int rows. A row that fails says why and the others still run; exit 1 if any row failed.
Takes about 2-4 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMPT = [{"role": "user", "content": "你好，给我讲一个故事，大概100字"}]
DECODE_TOKENS = 128
LOAD_TIMEOUT = 240
DTYPES: dict[str, Any] = {}  # device -> the torch dtype of the "fp16" row (float32 on a CPU dry run)


@dataclass
class Row:
    """One line of the table."""

    name: str
    load_s: float | None = None
    memory_mb: int | None = None
    tokens_s: float | None = None
    ok: bool | None = None  # None: not run
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m glmops.server` with a config of its own; the log kept for the failure note."""

    def __init__(self, work: Path, name: str, settings: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"{name}.log"
        config = {"host": "127.0.0.1", "port": self.port, "backend": "transformers", "queue_size": 16, **settings}
        path = work / f"{name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "glmops.server", "--config", str(path)], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=work)

    def wait_ready(self, client: Any) -> dict[str, Any]:
        """The /health body once the model is loaded; RuntimeError with the server's error otherwise."""
        deadline = time.monotonic() + LOAD_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.tail()}")
            try:
                body = client.get(f"{self.url}/health", timeout=5).json()
            except Exception:  # noqa: BLE001 - not listening yet
                body = {}
            if body.get("status") == "ok":
                return body
            if body.get("status") == "error":
                raise RuntimeError(str(body.get("error")))
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {LOAD_TIMEOUT} s: {self.tail()}")

    def tail(self, lines: int = 3) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def memory_mb(health: dict[str, Any]) -> int | None:
    gpus = health.get("gpus") or []
    return sum(gpu["memory_used_mb"] for gpu in gpus) if gpus else None


def chat(client: Any, url: str, max_tokens: int = DECODE_TOKENS) -> tuple[str, int, float]:
    """A greedy chat of exactly max_tokens tokens: (text, completion tokens, seconds)."""
    started = time.monotonic()
    response = client.post(f"{url}/v1/chat/completions", timeout=300, json={
        "model": "chatglm3-6b", "messages": PROMPT, "temperature": 0, "max_tokens": max_tokens, "min_tokens": max_tokens})
    seconds = time.monotonic() - started
    response.raise_for_status()
    body = response.json()
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"], seconds


def serve_row(client: Any, work: Path, row: Row, settings: dict[str, Any]) -> Server | None:
    """Start a server for `row`, wait for it and time one chat; the server stays up for more checks."""
    server = Server(work, row.name.replace(" ", "_"), settings)
    try:
        health = server.wait_ready(client)
        row.load_s = time.monotonic() - server.started
        row.memory_mb = memory_mb(health)
        text, tokens, seconds = chat(client, server.url)
        row.tokens_s = tokens / seconds
        row.ok = tokens == DECODE_TOKENS and bool(text)
        row.note = "" if row.ok else f"{tokens} tokens of {DECODE_TOKENS}"
        row.extra["text"] = text
        return server
    except Exception as exc:  # noqa: BLE001 - the row says why
        row.ok, row.note = False, one_line(exc)
        server.stop()
        return None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def check_embeddings(client: Any, url: str, row: Row) -> None:
    try:
        started = time.monotonic()
        response = client.post(f"{url}/v1/embeddings", json={"model": "bge-large-zh-v1.5", "input": ["你好", "ChatGLM3 on a GPU"]}, timeout=60)
        response.raise_for_status()
        data = response.json()["data"]
        norms = [sum(x * x for x in item["embedding"]) ** 0.5 for item in data]
        row.tokens_s = None
        row.load_s = time.monotonic() - started
        row.ok = len(data) == 2 and all(abs(n - 1) < 1e-2 for n in norms)
        row.note = f"{len(data[0]['embedding'])} dims, norms {', '.join(f'{n:.3f}' for n in norms)} (time is the request's)"
    except Exception as exc:  # noqa: BLE001
        row.ok, row.note = False, one_line(exc)


def check_streams(client: Any, url: str, row: Row, count: int = 8, max_tokens: int = 64) -> None:
    """`count` streamed chats at once; each must end with [DONE] after max_tokens tokens of text."""
    results: list[tuple[bool, int, str]] = [(False, 0, "not run")] * count

    def one(index: int) -> None:
        try:
            chunks, done = 0, False
            with client.stream("POST", f"{url}/v1/chat/completions", timeout=300, json={
                    "model": "chatglm3-6b", "messages": PROMPT, "temperature": 0.8, "seed": index, "stream": True,
                    "max_tokens": max_tokens, "min_tokens": max_tokens, "stream_options": {"include_usage": True}}) as response:
                response.raise_for_status()
                tokens = 0
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        event = json.loads(line[6:])
                        chunks += 1
                        if event.get("usage"):
                            tokens = event["usage"]["completion_tokens"]
            results[index] = (done and tokens == max_tokens, tokens, "" if done else "no [DONE]")
        except Exception as exc:  # noqa: BLE001
            results[index] = (False, 0, one_line(exc))

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    row.ok = all(ok for ok, _, _ in results)
    row.tokens_s = sum(tokens for _, tokens, _ in results) / seconds
    failed = [f"#{i}: {why or f'{tokens} tokens'}" for i, (ok, tokens, why) in enumerate(results) if not ok]
    row.note = f"{count} streams of {max_tokens} tokens, all ended with [DONE]; tokens/s across all" if row.ok else "; ".join(failed)


def check_generate(checkpoint: Path, row: Row, device: str) -> None:
    """The fp16 server's greedy text equals the checkpoint's own generate() on `device` (same prompt ids, same stops)."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
        model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, torch_dtype=DTYPES[device]).to(device).eval()
        ids = tokenizer.build_chat_input(PROMPT[0]["content"], history=[], role="user")["input_ids"].to(device)
        stops = [tokenizer.eos_token_id, tokenizer.get_command("<|user|>"), tokenizer.get_command("<|observation|>")]
        with torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False, eos_token_id=stops)
        direct = tokenizer.decode(out[0, ids.shape[1]:].tolist())
        same = direct == row.extra.get("text")
        row.ok = bool(row.ok) and same
        row.note = (row.note + "; " if row.note else "") + ("greedy text equals generate()" if same else "greedy text differs from generate()")
        del model
        torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001
        row.ok, row.note = False, f"generate() check: {one_line(exc)}"


def make_models(work: Path, checkpoint: Path | None, embedding: Path | None) -> tuple[Path, Path]:
    if checkpoint is None:
        checkpoint = work / "tiny-chatglm3-real"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_chatglm.py"), str(checkpoint)], check=True)
    if embedding is None:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(work / "models")], check=True)
        embedding = work / "models" / "tiny-bge"
    return checkpoint.resolve(), embedding.resolve()  # the servers run in `work`


def table(rows: list[Row], header: str) -> str:
    def cell(value: float | int | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    lines = [header, "", "| row | load s | GPU memory MB | tokens/s | result | note |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        result = "skipped" if row.ok is None else ("pass" if row.ok else "FAIL")
        note = row.note.replace("|", "/")
        lines.append(f"| {row.name} | {cell(row.load_s, '.1f')} | {cell(row.memory_mb, 'd')} | {cell(row.tokens_s, '.1f')} | {result} | {note} |")
    return "\n".join(lines) + "\n"


def environment() -> str:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{gpu}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}")


def update_readme(readme: Path, section: str) -> None:
    """Replace the text under '## GPU check' (up to the next '## ') with `section`."""
    text = readme.read_text()
    start = text.index("## GPU check")
    body_start = text.index("\n", start) + 1
    end = text.find("\n## ", body_start)
    end = len(text) if end < 0 else end + 1
    readme.write_text(text[:body_start] + "\n" + section + "\n" + text[end:])


def run(args: argparse.Namespace) -> list[Row]:
    import httpx

    work = Path(tempfile.mkdtemp(prefix="glmops-gpu-check-"))
    checkpoint, embedding = make_models(work, args.checkpoint, args.embedding)
    import torch

    DTYPES.update(cuda=torch.float16, cpu=torch.float32)
    half = "float16" if args.device == "cuda" else "float32"
    base = {"model_path": str(checkpoint), "device": args.device, "max_tokens": DECODE_TOKENS}
    rows = {name: Row(name) for name in ("fp16", "embeddings", "8 streams", "int8", "int4", "device_map auto", "vllm")}
    with httpx.Client() as client:
        server = serve_row(client, work, rows["fp16"], {**base, "dtype": half, "embedding_model_path": str(embedding)})
        if server:
            check_embeddings(client, server.url, rows["embeddings"])
            check_streams(client, server.url, rows["8 streams"])
            rows["8 streams"].load_s = None
            server.stop()
        else:
            for name in ("embeddings", "8 streams"):
                rows[name].ok, rows[name].note = False, "the fp16 server did not start"
        for name, settings in (("int8", {"dtype": half, "quantize": 8}), ("int4", {"dtype": half, "quantize": 4}),
                               ("device_map auto", {"dtype": half, "device_map": "auto"})):
            server = serve_row(client, work, rows[name], {**base, **settings})
            if server:
                server.stop()
        try:
            import vllm  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            rows["vllm"].note = f"vllm is not installed here ({type(exc).__name__})"
        else:
            server = serve_row(client, work, rows["vllm"], {**base, "backend": "vllm", "dtype": half})
            if server:
                server.stop()
    if "text" in rows["fp16"].extra:  # last: this process's own CUDA context would count in the rows' memory
        check_generate(checkpoint, rows["fp16"], args.device)
    return list(rows.values())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a ChatGLM3-format checkpoint folder (default: make the tiny one)")
    parser.add_argument("--embedding", type=Path, help="an embedding model folder (default: make the tiny bge)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--readme", type=Path, help="replace this file's '## GPU check' section with the table")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a dry run of the script itself (the CUDA rows fail)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device: this check needs a GPU machine", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows = run(args)
    header = f"Run of `python bench/gpu_check.py` on {environment()}; {time.monotonic() - started:.0f} s in all; {DECODE_TOKENS} tokens per chat."
    text = table(rows, header)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.readme:
        update_readme(args.readme, text)
    return 0 if all(row.ok is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
