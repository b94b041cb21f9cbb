"""The local demo's ports (issue 18, item 3): with 127.0.0.1:6006 taken (a user's own tunnel to AutoDL
sits there) the demo picks a free port and says which, instead of failing with "address already in
use"; a later run keeps the ports it chose. scripts/demo.py's choose_ports() runs for real, in a
network namespace of its own, so which ports are free does not depend on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

CHOOSE = """
import socket, sys
sys.path.insert(0, {scripts!r})
import demo
held = []
for port in {hold!r}:
    sock = socket.socket(); sock.bind(("127.0.0.1", port)); sock.listen(); held.append(sock)
demo.DEMO.mkdir(parents=True, exist_ok=True)
for _ in range({runs!r}):
    print(demo.choose_ports())
"""


def choose(tmp_path: Path, hold: tuple[int, ...] = (), runs: int = 1, **env: str) -> list[tuple]:
    """choose_ports() in a fresh network namespace with the ports in HOLD taken; the results of RUNS calls."""
    assert shutil.which("unshare") and shutil.which("ip"), "needs unshare (util-linux) and ip (iproute2): bash scripts/bootstrap.sh"
    code = CHOOSE.format(scripts=str(ROOT / "scripts"), hold=hold, runs=runs)
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("GLMOPS_DEMO_")}, "PYTHONPATH": str(ROOT),
            "GLMOPS_DEMO_DIR": str(tmp_path / "demo"), **env}
    done = subprocess.run(["unshare", "--map-root-user", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                           sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return [eval(line) for line in done.stdout.splitlines()]  # noqa: S307 - tuples printed by the line above


def test_free_ports_are_6006_and_6106(tmp_path: Path) -> None:
    assert choose(tmp_path) == [(6006, 6106, [])]


def test_a_taken_6006_gives_another_port_and_says_so(tmp_path: Path) -> None:
    (api, local, notes), = choose(tmp_path, hold=(6006,))
    assert api not in (6006, 6106) and local == 6106
    assert notes == [f"127.0.0.1:6006 is taken (another server or tunnel); the demo uses {api} instead"]
    assert json.loads((tmp_path / "demo" / "ports.json").read_text()) == {"api": api, "local": 6106}
    (again_api, again_local, again_notes), = choose(tmp_path, hold=(6006,))
    assert (again_api, again_local, again_notes) == (api, 6106, []), "the next run keeps the port it chose"


def test_both_taken_and_an_explicit_port(tmp_path: Path) -> None:
    (api, local, notes), = choose(tmp_path, hold=(6006, 6106))
    assert len({api, local, 6006, 6106}) == 4 and len(notes) == 2
    (api, local, notes), = choose(tmp_path / "other", hold=(6006,), GLMOPS_DEMO_API_PORT="7001")
    assert (api, local, notes) == (7001, 6106, [])
