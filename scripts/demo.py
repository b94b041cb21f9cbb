#!/usr/bin/env python3
"""The local demo (run by scripts/demo.sh after bootstrap): deploy the tiny model to this machine,
open a tunnel, stream a chat answer. Run it again: the deploy reports changed=0.

    python scripts/demo.py          # deploy + tunnel + streamed answer
    python scripts/demo.py stop     # stop the tunnel, the server and the throwaway sshd

The target is this machine reached over SSH through a throwaway sshd on 127.0.0.1 (the same
path a real host takes); when no sshd can be started (not root, no openssh-server) it falls
back to `ansible_connection: local`. Everything lives in .demo/ (gitignored).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("GLMOPS_DEMO_DIR") or ROOT / ".demo")  # the tests use a folder of their own
STATE = DEMO / "state"  # tunnel state (XDG_STATE_HOME for glmops)
PORTS = DEMO / "ports.json"  # the ports the last run chose (kept while its server/tunnel hold them)
API_PORT = 6006  # set by choose_ports()
LOCAL_PORT = 6106
GLMOPS = [sys.executable, "-m", "glmops"]
sys.path.insert(0, str(ROOT / "tests"))


def _env() -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(STATE), "PYTHONPATH": str(ROOT)}


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def port_free(port: int) -> bool:
    """True when a listener could bind 127.0.0.1:PORT now (as the server and the tunnel do)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port(avoid: set[int]) -> int:
    """A port the kernel hands out as free (not one in AVOID)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


def choose_ports() -> tuple[int, int, list[str]]:
    """(api port, tunnel port, notes): GLMOPS_DEMO_API_PORT / GLMOPS_DEMO_LOCAL_PORT when set; else the
    last run's ports while this demo's server / tunnel hold them; else 6006 and 6106 when free, else
    free ones (6006 is often a user's own tunnel to AutoDL)."""
    try:
        saved = json.loads(PORTS.read_text())
    except (OSError, ValueError):
        saved = {}
    ours = {"api": _alive(DEMO / "deploy" / "run" / "server.pid") is not None, "local": _tunnel_running(saved.get("local"))}
    chosen: dict[str, int] = {}
    notes = []
    for key, env, default in (("api", "GLMOPS_DEMO_API_PORT", 6006), ("local", "GLMOPS_DEMO_LOCAL_PORT", 6106)):
        if os.environ.get(env):
            chosen[key] = int(os.environ[env])
        elif saved.get(key) and (ours[key] or port_free(saved[key])) and saved[key] not in chosen.values():
            chosen[key] = saved[key]
        elif port_free(default) and default not in chosen.values():
            chosen[key] = default
        else:
            chosen[key] = any_free_port(set(chosen.values()))
            notes.append(f"127.0.0.1:{default} is taken (another server or tunnel); the demo uses {chosen[key]} instead")
    PORTS.write_text(json.dumps(chosen))
    return chosen["api"], chosen["local"], notes


def _tunnel_running(port: int | None) -> bool:
    """True when this demo's background tunnel listens on PORT."""
    if not port:
        return False
    status = subprocess.run([*GLMOPS, "tunnel", "status"], env=_env(), capture_output=True, text=True)
    return f"{port}" in status.stdout


def _torch_index() -> str:
    """PyTorch's CPU index on Linux (PyPI's Linux torch is the CUDA build, several GB) as bootstrap.sh
    uses it: GLMOPS_TORCH_INDEX, '' when that is empty, not Linux, or its host does not resolve."""
    from urllib.parse import urlsplit

    index = os.environ.get("GLMOPS_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
    if not index or not sys.platform.startswith("linux"):
        return ""
    try:
        socket.getaddrinfo(urlsplit(index).hostname or "", 443)
    except (OSError, UnicodeError):
        return ""
    return index


def start_sshd() -> dict | None:
    """A throwaway sshd on 127.0.0.1 (kept between runs); None when it cannot start."""
    from sshd import SshServer

    state = DEMO / "sshd"
    port_file = state / "port"
    if _alive(state / "sshd.pid") and port_file.exists():
        server = SshServer(str(state), port=int(port_file.read_text()))
        return {**server.hostvars(), "glmops_demo_sshd": True}
    saved = os.dup(1)  # sshd keeps running after this script: it must not hold our stdout open
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        server = SshServer(str(state), fast_shell=True).start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"(no throwaway sshd: {exc}; deploying with connection: local)")
        return None
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    port_file.write_text(str(server.port))
    return {**server.hostvars(), "glmops_demo_sshd": True}


def write_inventory(hostvars: dict | None) -> Path:
    import yaml

    models = DEMO / "models"
    group_vars = {
        "deploy_dir": str(DEMO / "deploy"), "profile": "cpu", "transformers_pin": "transformers==4.57.6",
        "model_source": "upload", "model_id": "tiny-chatglm3", "model_upload_from": str(models / "tiny-chatglm3"),
        "embedding_model": "tiny-bge", "embedding_model_source": "upload", "embedding_model_upload_from": str(models / "tiny-bge"),
        "api_port": API_PORT, "tunnel_local_port": LOCAL_PORT, "client_env_file": str(DEMO / "client.env"),
    }
    torch_index = _torch_index()
    if torch_index:  # the CPU torch, as scripts/bootstrap.sh installs it
        group_vars["torch_pip_args"] = f"--extra-index-url {torch_index}"
    host = hostvars or {"ansible_connection": "local"}
    path = DEMO / "inventory.yml"
    path.write_text("# Written by scripts/demo.py\n" + yaml.safe_dump({"all": {"children": {"local": {"vars": group_vars, "hosts": {"demo": host}}}}}))
    return path


def stream_answer() -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{LOCAL_PORT}/v1", api_key="EMPTY")
    print(f"\n--- streamed from http://127.0.0.1:{LOCAL_PORT}/v1 (the tunnel) ---")
    stream = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好，给我讲一个故事"}],
                                            max_tokens=40, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print("\n--- (random tiny weights: the words are noise; a real ChatGLM3 answers sensibly) ---")


def deploy() -> int:
    global API_PORT, LOCAL_PORT
    DEMO.mkdir(exist_ok=True)
    API_PORT, LOCAL_PORT, notes = choose_ports()
    for note in notes:
        print(f"(ports: {note})")
    print(f"(ports: the API server on 127.0.0.1:{API_PORT}, the tunnel on 127.0.0.1:{LOCAL_PORT})")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(DEMO / "models")], check=True, stdout=subprocess.DEVNULL)
    inventory = write_inventory(start_sshd())
    run = subprocess.run([*GLMOPS, "run", str(ROOT / "playbooks" / "local.yml"), "-i", str(inventory)], env=_env())
    if run.returncode != 0:
        print(f"\nthe deploy failed (exit {run.returncode}); the server log: {DEMO / 'deploy' / 'logs' / 'server.log'}")
        return run.returncode
    if not _tunnel_running(LOCAL_PORT):
        subprocess.run([*GLMOPS, "tunnel", "open", "demo", "-i", str(inventory), "--local-port", str(LOCAL_PORT),
                        "--remote-port", str(API_PORT), "--background"], env=_env(), check=True)
    stream_answer()
    print(f"""
The API runs on this machine at 127.0.0.1:{API_PORT}, reached through the tunnel at 127.0.0.1:{LOCAL_PORT}.
  clients:   {DEMO / 'client.env'} (OPENAI_BASE_URL, OPENAI_API_KEY, ZHIPU_*)
  server log: {DEMO / 'deploy' / 'logs' / 'server.log'}
  again:     bash scripts/demo.sh        (the deploy reports changed=0)
  stop:      bash scripts/demo.sh stop   (tunnel, server, throwaway sshd)""")
    return 0


def stop() -> int:
    subprocess.run([*GLMOPS, "tunnel", "stop", "--all"], env=_env())
    for pid_file, what in ((DEMO / "deploy" / "run" / "server.pid", "server"), (DEMO / "sshd" / "sshd.pid", "sshd")):
        pid = _alive(pid_file)
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM) if what == "server" else os.kill(pid, signal.SIGTERM)
            except OSError:
                os.kill(pid, signal.SIGTERM)
            print(f"stopped the {what} (pid {pid})")
    time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(stop() if sys.argv[1:] == ["stop"] else deploy())
