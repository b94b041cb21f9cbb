"""model_fetch's pip install of the hub client on the host (issue 17): it uses `pip_args` (a mirror) and
`pip_environment` (AutoDL's network_turbo proxy) even when the download itself runs without the proxy, and its
error keeps pip's first lines and says how pip reached the index. The real pip, against a logging proxy on loopback
that refuses everything (nothing leaves the machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from modhelp import run_module
from proxy import LoggingProxy

from glmops.modules.model_fetch import excerpt


def test_client_install_goes_through_pip_environment_and_pip_args(conn: Any, tmp_path: Path) -> None:
    env = tmp_path / "env"  # a python with pip but without modelscope
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    with LoggingProxy("127.0.0.1", allow=set()) as proxy:
        result = run_module(conn, "model_fetch", source="modelscope", repo="ZhipuAI/tiny", dest=str(tmp_path / "m"), python=str(python),
                            endpoint="http://127.0.0.1:9",
                            pip_args="--isolated --index-url https://pypi.org/simple --retries 0 --timeout 10",
                            pip_environment={"https_proxy": proxy.url, "PIP_CONFIG_FILE": "/dev/null"})
    assert result.failed
    assert ("CONNECT", "pypi.org:443", 403) in proxy.log, proxy.log  # pip asked the proxy, with the index of pip_args
    lines = result.msg.splitlines()
    assert lines[0] == f"cannot install modelscope into {python} (pip ran through the proxy in https_proxy, with the pip_args given):"
    assert lines[1].startswith("ERROR: Could not find a version that satisfies the requirement modelscope"), result.msg
    assert proxy.url not in result.msg  # where the proxy is stays out of the output
    assert "/etc/network_turbo" in result.msg and "pip_extra_args" in result.msg


def test_pip_output_keeps_its_first_and_last_lines() -> None:
    output = "\n".join(f"line {n}" for n in range(100))
    short = excerpt(output).splitlines()
    assert short[:12] == [f"line {n}" for n in range(12)] and short[-8:] == [f"line {n}" for n in range(92, 100)]
    assert short[12] == "... (80 lines left out) ..."
    assert excerpt("one\ntwo") == "one\ntwo"
