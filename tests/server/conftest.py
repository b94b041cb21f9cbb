"""Fixtures: tiny models made offline, and the real server process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-glmops-test-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, config: dict, directory: Path, python: str = sys.executable):
        self.config = {"port": free_port(), "log_file": str(directory / "server.log"), **config}
        self.path = directory / "api_server.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.url = f"http://127.0.0.1:{self.config['port']}"
        self.log = Path(self.config["log_file"])
        self.health_codes: list[int] = []
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([python, "-m", "glmops.server", "--config", str(self.path)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(directory / "stderr.log", "wb"))

    def wait_healthy(self, timeout: float = 120) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + (self.path.parent / "stderr.log").read_text()[-3000:])
            try:
                code = httpx.get(self.url + "/health", timeout=2).status_code
                self.health_codes.append(code)
                if code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError("server did not become healthy")

    def wait_settled(self, timeout: float = 120) -> "ServerProcess":
        """Wait until /health says the model loaded or failed to load (no longer "loading")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + (self.path.parent / "stderr.log").read_text()[-3000:])
            try:
                if httpx.get(self.url + "/health", timeout=2).json().get("status") != "loading":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server's model neither loaded nor failed")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def start_server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    started: list[ServerProcess] = []

    def start(python: str = sys.executable, healthy: bool = True, **config: object) -> ServerProcess:
        """A server with `config` over the tiny chat model's, run by `python`; waits until it is healthy
        (or, with healthy=False, until its model has loaded or failed to)."""
        base = {"model_path": str(tiny_models["chat"])}
        server = ServerProcess({**base, **config}, tmp_path_factory.mktemp("server"), python)
        started.append(server)
        return server.wait_healthy() if healthy else server.wait_settled()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server, tiny_models: dict[str, Path]) -> ServerProcess:
    """The main test server: API key required, embeddings on."""
    return start_server(api_keys=[API_KEY], embedding_model_path=str(tiny_models["embed"]), max_tokens=64)


@pytest.fixture(scope="session")
def open_server(start_server) -> ServerProcess:
    """No API key, no embedding model, a queue of one: for the zhipuai client, 404s and 503s."""
    return start_server(concurrency=1, queue_size=1, max_context=8192)


@pytest.fixture(scope="session")
def limited_server(start_server) -> ServerProcess:
    """Small limits: one generation, one waiting, a 64 KiB body, a 2048-token context."""
    return start_server(concurrency=1, queue_size=1, max_context=2048, max_body_bytes=65536)
