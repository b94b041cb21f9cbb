"""Benchmark: `glmops tunnel` against OpenSSH's `ssh -N -L`, side by side, on the same sshd.

    .venv/bin/python bench/tunnel.py [--requests 200] [--megabytes 200] [--repeat 3] [--json out.json]

Starts the project's test sshd (tests/sshd.py) on 127.0.0.1 and a small HTTP server on another
loopback port (the "remote" service, in its own process), then, for each repeat, alternately through
either tunnel: N small GET requests each on a new TCP connection, N on one keep-alive connection,
and one download of the given size. Prints medians and the ratios against `ssh -L`.
Targets (issue 7): per-request latency <= 1.5x `ssh -L`, throughput >= 70 % of it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = b'{"status":"ok","model":"chatglm3-6b"}'


def serve(port: int, megabytes: int) -> None:
    """The 'remote' HTTP/1.1 server: /health (small JSON) and /big (megabytes of zeros)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    big = b"\0" * (megabytes * 1024 * 1024)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = big if self.path == "/big" else SMALL
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            if len(body) < 65536:
                self.wfile.write(head + body)  # one send: no Nagle / delayed-ACK stall
            else:
                self.wfile.write(head)
                self.wfile.write(memoryview(body))

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/health")
            if connection.getresponse().read() == SMALL:
                connection.close()
                return
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not forward within {timeout} s")


def new_connections(port: int, count: int) -> float:
    """Seconds per request, each on a new TCP connection."""
    start = time.perf_counter()
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/health", headers={"Connection": "close"})
        assert connection.getresponse().read() == SMALL
        connection.close()
    return (time.perf_counter() - start) / count


def keep_alive(port: int, count: int) -> float:
    """Seconds per request on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/health")
    connection.getresponse().read()
    start = time.perf_counter()
    for _ in range(count):
        connection.request("GET", "/health")
        assert connection.getresponse().read() == SMALL
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed / count


def download(port: int, megabytes: int) -> float:
    """MB/s of one /big download."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    connection.request("GET", "/big")
    response = connection.getresponse()
    got = 0
    buffer = bytearray(1 << 20)
    while True:
        n = response.readinto(buffer)
        if not n:
            break
        got += n
    elapsed = time.perf_counter() - start
    connection.close()
    assert got == megabytes * 1024 * 1024, got
    return megabytes / elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ssh(server, local: int, remote: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["ssh", "-N", "-L", f"{local}:127.0.0.1:{remote}", "-p", str(server.port), "-i", server.client_key,
         "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
         "-o", "ExitOnForwardFailure=yes", "-F", "/dev/null", f"{server.user}@{server.host}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def start_glmops(inventory: str, local: int, remote: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "glmops", "tunnel", "bench", "-i", inventory, "--local-port", str(local), "--remote-port", str(remote)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write every sample to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.megabytes)
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from sshd import SshServer

    work = Path(tempfile.mkdtemp(prefix="glmops-bench-tunnel-"))
    server = SshServer(str(work / "sshd"), fast_shell=True).start()
    remote = free_port()
    http_proc = subprocess.Popen([sys.executable, __file__, "--serve", str(remote), "--megabytes", str(args.megabytes)])
    inventory = work / "hosts.yml"
    import yaml

    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"bench": server.hostvars()}}}))
    samples: dict[str, dict[str, list[float]]] = {"glmops tunnel": {}, "ssh -L": {}}
    try:
        wait_port(remote, http_proc, "the HTTP server")
        for repeat in range(args.repeat):
            for tool in (("ssh -L", "glmops tunnel") if repeat % 2 else ("glmops tunnel", "ssh -L")):
                local = free_port()
                proc = start_glmops(str(inventory), local, remote) if tool == "glmops tunnel" else start_ssh(server, local, remote)
                try:
                    wait_port(local, proc, tool)
                    figures = {
                        "new connection (ms/request)": new_connections(local, args.requests) * 1000,
                        "keep-alive (ms/request)": keep_alive(local, args.requests) * 1000,
                        f"{args.megabytes} MB download (MB/s)": download(local, args.megabytes),
                    }
                finally:
                    stop(proc)
                for key, value in figures.items():
                    samples[tool].setdefault(key, []).append(value)
                print(f"run {repeat + 1} {tool:14s} " + "  ".join(f"{k}: {v:.2f}" for k, v in figures.items()), flush=True)
    finally:
        stop(http_proc)
        server.stop()
    medians = {tool: {k: statistics.median(v) for k, v in values.items()} for tool, values in samples.items()}
    print(f"\nmedians of {args.repeat} runs ({args.requests} requests, {args.megabytes} MB):")
    print(f"{'':32s} {'glmops tunnel':>14s} {'ssh -L':>10s} {'ratio':>8s}")
    ratios = {}
    for key in medians["ssh -L"]:
        ours, theirs = medians["glmops tunnel"][key], medians["ssh -L"][key]
        ratio = ours / theirs
        ratios[key] = ratio
        target = "<= 1.50" if "ms" in key else ">= 0.70"
        met = ratio <= 1.5 if "ms" in key else ratio >= 0.7
        print(f"{key:32s} {ours:14.2f} {theirs:10.2f} {ratio:7.2f}x  (target {target}: {'met' if met else 'MISSED'})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "samples": samples, "medians": medians, "ratios": ratios, "argv": sys.argv,
            "python": platform.python_version(), "machine": platform.platform(),
            "ssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
