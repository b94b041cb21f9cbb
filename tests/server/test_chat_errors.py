"""`glmops chat`'s errors tell apart no tunnel, a server that is down, and a wrong key (issue 18, item 5):
the real `glmops chat` command against the real API server (with an API key), a real background
`glmops tunnel` over the test sshd, and a loopback HTTP server stopped to play a server that went
down. "No tunnel" runs in a network namespace of its own, so 127.0.0.1:6006 (the default URL) is free
whatever this machine runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT
from httpserver import LoopbackHTTPServer
from sshd import free_port

from .conftest import API_KEY, ServerProcess


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No open tunnels (a fresh state directory), no key in the environment."""
    base = {k: v for k, v in os.environ.items() if k != "GLMOPS_API_KEY"}
    return {**base, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"}


def chat(env: dict[str, str], *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "glmops", "chat", *args, "--max-tokens", "4", "--timeout", "30"],
                          env=env, capture_output=True, text=True, timeout=120)


def inventory(path: Path, sshd: Any, **hostvars: Any) -> str:
    path.write_text(yaml.safe_dump({"all": {"hosts": {"box": {**sshd.hostvars(), **hostvars}}}}))
    return str(path)


def failed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_no_tunnel(env: dict[str, str]) -> None:
    assert shutil.which("unshare") and shutil.which("ip"), "needs unshare (util-linux) and ip (iproute2): bash scripts/bootstrap.sh"
    netns = ("unshare", "--map-root-user", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh")
    text = failed(chat(env, "hello", prefix=netns))
    assert "no tunnel: no glmops tunnel is open and nothing listens at http://127.0.0.1:6006/v1" in text, text
    assert "glmops tunnel open HOST --background" in text and "server down" not in text and "key" not in text


def test_tunnel_open_server_down(env: dict[str, str], tmp_path: Path, sshd: Any) -> None:
    inv = inventory(tmp_path / "hosts.yml", sshd)
    local = free_port()
    with LoopbackHTTPServer() as http:  # up while the tunnel opens (it checks the port), then down
        http.files["/health"] = b'{"status":"ok"}'
        remote = http.port
        opened = subprocess.run([sys.executable, "-m", "glmops", "tunnel", "open", "box", "-i", inv, "--local-port", str(local),
                                 "--remote-port", str(remote), "--background"], env=env, capture_output=True, text=True, timeout=60)
        assert opened.returncode == 0, opened.stdout + opened.stderr
    try:
        for args in (["hello"], ["box", "hello", "-i", inv]):  # the one open tunnel; the tunnel to HOST
            text = failed(chat(env, *args))
            assert f"server down: the tunnel to box is open (http://127.0.0.1:{local}/v1), but nothing answers behind it " \
                   f"at 127.0.0.1:{remote} on box" in text, text
            assert "glmops status box" in text and "glmops logs box" in text and "tunnel open" not in text
    finally:
        subprocess.run([sys.executable, "-m", "glmops", "tunnel", "stop", "box"], env=env, capture_output=True, timeout=60)


def test_server_down_over_ssh_or_here(env: dict[str, str], tmp_path: Path, sshd: Any) -> None:
    port = free_port()
    text = failed(chat(env, "box", "hello", "-i", inventory(tmp_path / "hosts.yml", sshd, api_port=port)))
    assert f"server down: nothing answers at http://127.0.0.1:{port}/v1 on box (over SSH) (the SSH connection to box works)" in text, text
    assert "glmops restart box" in text and "tunnel" not in text
    local = tmp_path / "local.yml"
    local.write_text(yaml.safe_dump({"all": {"hosts": {"here": {"ansible_connection": "local", "api_port": port}}}}))
    here = failed(chat(env, "here", "hello", "-i", str(local)))
    assert f"server down: nothing answers at http://127.0.0.1:{port}/v1 (here is this machine)" in here, here


def test_wrong_key_and_no_key(env: dict[str, str], tmp_path: Path, sshd: Any, server: ServerProcess) -> None:
    url = server.url + "/v1"
    wrong = failed(chat(env, "hello", "--base-url", url, "--api-key", "sk-wrong"))
    assert "wrong key: the server refused the API key from --api-key (HTTP 401" in wrong and "sk-wrong" not in wrong, wrong
    from_env = failed(chat({**env, "GLMOPS_API_KEY": "sk-wrong"}, "hello", "--base-url", url))
    assert "wrong key: the server refused the API key from $GLMOPS_API_KEY" in from_env, from_env
    inv = inventory(tmp_path / "hosts.yml", sshd, api_port=server.config["port"], api_keys=["sk-wrong"])
    from_inventory = failed(chat(env, "box", "hello", "-i", inv))
    assert "wrong key: the server refused the API key from the api_keys[0] of box in the inventory" in from_inventory, from_inventory
    none = failed(chat(env, "hello", "--base-url", url))
    assert "no key: the server wants an API key and none was sent (HTTP 401" in none and "--api-key" in none, none
    right = chat(env, "box", "hello", "-i", inventory(tmp_path / "good.yml", sshd, api_port=server.config["port"], api_keys=[API_KEY]))
    assert right.returncode == 0, right.stderr
