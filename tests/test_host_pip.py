"""pip on the host (issue 17). model_fetch's pip install of the hub client uses `pip_args` (a mirror) and
`pip_environment` (AutoDL's network_turbo proxy) even when the download itself runs without the proxy, and its
error keeps pip's first lines and says how pip reached the index; the pip module's error keeps pip's first lines
too. The real pip, offline: against a logging proxy on loopback that refuses everything, or local paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from modhelp import run_module
from proxy import LoggingProxy

from glmops.modules._output import excerpt


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with pip and nothing else (no modelscope)."""
    env = tmp_path_factory.mktemp("pip") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    return env


def test_client_install_goes_through_pip_environment_and_pip_args(conn: Any, bare_env: Path, tmp_path: Path) -> None:
    python = bare_env / "bin" / "python"
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


def test_pip_module_failure_keeps_pips_first_lines(conn: Any, bare_env: Path, tmp_path: Path) -> None:
    links = " ".join(f"--find-links {tmp_path}/missing-links/{n:02d}" for n in range(1, 26))  # 25 warnings, then the error
    result = run_module(conn, "pip", name=["glmops-no-such-package"], virtualenv=str(bare_env), extra_args=f"--isolated --no-index {links}")
    assert result.failed
    assert f"Location '{tmp_path}/missing-links/01' is ignored" in result.msg, result.msg  # pip's first line is kept
    assert "ERROR: No matching distribution found for glmops-no-such-package" in result.msg  # and its verdict
