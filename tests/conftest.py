"""Shared fixtures: a real OpenSSH server on 127.0.0.1 and helpers to write inventories."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from sshd import SshServer, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _started(server: SshServer) -> SshServer:
    """Start `server`; a missing or broken sshd FAILS the test (never skips) with the fix."""
    try:
        return server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot start the test sshd: {exc}\n(run `bash scripts/bootstrap.sh` to install openssh-server)", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def private_user_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The controller's own ~/.ssh/config, tunnel state directory and ~/.config/glmops (the user's inventory,
    keys, .env files) are never read: every glmops the tests run (in-process or as a subprocess, which
    inherits the environment) gets an empty ssh config and fresh state and config directories, unless a
    test sets its own."""
    base = tmp_path_factory.mktemp("user-files")
    (base / "ssh_config").write_text("")
    wanted = {"GLMOPS_SSH_CONFIG": str(base / "ssh_config"), "XDG_STATE_HOME": str(base / "state"),
              "XDG_CONFIG_HOME": str(base / "config")}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny chat and embedding models (scripts/make_tiny_models.py), made once per session."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(out)], check=True, capture_output=True)
    return {"chat": out / "tiny-chatglm3", "embed": out / "tiny-bge"}


@pytest.fixture(scope="session")
def tiny_chatglm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint in ChatGLM3's own format, with its remote code (scripts/make_tiny_chatglm.py), made once."""
    out = tmp_path_factory.mktemp("chatglm") / "tiny-chatglm3"
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_chatglm.py"), str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    if made.returncode:
        pytest.fail(f"scripts/make_tiny_chatglm.py failed: {(made.stdout + made.stderr).strip()[-2000:]}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def pins_python() -> str:
    """The python of .venv-pins (the deployed torch/transformers pins ChatGLM3's remote code needs): GLMOPS_PINS_PYTHON,
    else ROOT/.venv-pins/bin/python. Missing, it FAILS the test (never skips) with the fix."""
    python = os.environ.get("GLMOPS_PINS_PYTHON") or str(ROOT / ".venv-pins" / "bin" / "python")
    if not os.access(python, os.X_OK):
        pytest.fail(f"{python} does not exist: run `bash scripts/bootstrap.sh` (it makes .venv-pins with the deployed pins, "
                    "transformers 4.40.2, that ChatGLM3's remote code needs), or set GLMOPS_PINS_PYTHON", pytrace=False)
    return python


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running sshd on 127.0.0.1 for the whole session (root login with `client_key`)."""
    server = _started(SshServer(str(tmp_path_factory.mktemp("sshd"))))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """`sshd_factory(**SshServer kwargs)` starts one more server; all are stopped at session end."""
    started: list[SshServer] = []

    def start(**kwargs: object) -> SshServer:
        server = _started(SshServer(str(tmp_path_factory.mktemp("sshd-extra")), **kwargs))  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def unreachable_hostvars(sshd: SshServer) -> dict:
    """Valid hostvars of `sshd`, but with a port on which nothing listens."""
    return {**sshd.hostvars(), "ansible_port": free_port()}


@pytest.fixture
def world_dir() -> Iterator:
    """A fresh directory under /tmp that any user (e.g. `nobody` for become tests) can write;
    pytest's tmp_path is private to root."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="glmops-world-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def conn(sshd: SshServer) -> Iterator:
    """One SSH connection to the test sshd (the host named "target"), closed after the test."""
    from glmops.connection.factory import open_connection

    connection = open_connection("target", sshd.hostvars())
    connection.connect()
    yield connection
    connection.close()


@pytest.fixture(params=["ssh", "local"])
def any_conn(request: pytest.FixtureRequest, sshd: SshServer) -> Iterator:
    """The same contract, over the real SSH transport and on the controller itself."""
    from glmops.connection.factory import open_connection
    from glmops.connection.local import LocalConnection

    connection = open_connection("target", sshd.hostvars()) if request.param == "ssh" else LocalConnection()
    connection.connect()
    yield connection
    connection.close()


@pytest.fixture
def inv(tmp_path, sshd: SshServer):
    """An inventory with one host, "target", the test sshd."""
    from helpers import inventory

    return inventory(tmp_path / "hosts.yml", {"target": sshd.hostvars()})
