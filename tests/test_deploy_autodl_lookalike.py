"""playbooks/autodl.yml for real (issue 17, item 5), unmodified, against a host that looks like an AutoDL RTX 3090
container, as a new user would run it:

- the host is an sshd in a network namespace of its own (reached over a veth pair this test creates), with no route
  anywhere: PyPI is reachable only through the "network_turbo" proxy, a logging HTTP proxy run by this test on the
  root side of the pair; the file the network_turbo role reads (network_turbo_file) exports it as on AutoDL;
- a stand-in `nvidia-smi` on the remote shell's PATH prints an RTX 3090 (no CUDA behind it);
- a conda-like interpreter (a Python prefix of its own whose site-packages hold torch and the deployed pins: the
  interpreter of .venv-pins, `GLMOPS_PINS_PYTHON` to use another) reused with python_env_reuse, as inventory/autodl.yml
  does; the deployment on a stand-in data disk (deploy_dir under autodl-tmp);
- the weights from "ModelScope": the shipped default model_source, the real modelscope client (pip-installed on the
  host through the proxy) against the loopback hub stand-in (tests/hubserver.py), reached without the proxy.

The inventory is inventory/autodl.yml's own group vars with only the paths, the model id and endpoint and the embedding
model changed. Then: a re-run changes nothing, and `profile: auto` on the stand-in 3090 (fp16 on a CUDA that is not
there) fails as soon as the server reports its load error, with the server's own error lines.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, events, glmops, recap, results, write
from hubserver import HubServer
from proxy import LoggingProxy
from sshd import SshServer
from test_gpu_facts import SMI_3090, STAND_IN

pytestmark = pytest.mark.timeout(1200)

PLAYBOOK = ROOT / "playbooks" / "autodl.yml"
HOST = "autodl-3090"
PYPI = {"pypi.org", "files.pythonhosted.org"}


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Namespace:
    """A network namespace joined to the root namespace by a veth pair (a /30 of 10.0.0.0/8 of its own), nothing else:
    no default route, so from inside only the root side's address (ROOT_IP) can be reached."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name, self.outer, self.inner = f"glmops-autodl-{tag}", f"gva{tag}", f"gvb{tag}"
        third = int(tag[:2], 16)
        self.root_ip, self.ns_ip = f"10.251.{third}.1", f"10.251.{third}.2"

    def create(self) -> "Namespace":
        _ip("netns", "add", self.name)
        _ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _ip("link", "set", self.inner, "netns", self.name)
        _ip("addr", "add", f"{self.root_ip}/30", "dev", self.outer)
        _ip("link", "set", self.outer, "up")
        for args in (["addr", "add", f"{self.ns_ip}/30", "dev", self.inner], ["link", "set", self.inner, "up"], ["link", "set", "lo", "up"]):
            _ip("-n", self.name, *args)
        return self

    def delete(self) -> None:
        for args in (["link", "del", self.outer], ["netns", "del", self.name]):
            subprocess.run(["ip", *args], capture_output=True)


class NamespacedSshd(SshServer):
    """The container's sshd: in the namespace, the stand-in nvidia-smi first on its sessions' PATH."""

    def __init__(self, state_dir: str, bin_dir: Path, ns: Namespace):
        super().__init__(state_dir, host=ns.ns_ip, fast_shell=True, netns=ns.name)
        self.bin_dir = bin_dir

    def _config(self) -> str:
        path = f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return super()._config().replace("SetEnv SHLVL=1", f"SetEnv SHLVL=1 PATH={path}")


def make_conda_like(prefix: Path, source: Path) -> Path:
    """A Python prefix of its own (as /root/miniconda3 is), whose site-packages hold those of `source`'s environment.

    A venv made from a venv's python sees the base interpreter's packages, not the venv's: so the base interpreter's
    binary is copied to PREFIX/bin, its standard library linked into PREFIX/lib, and a .pth file adds `source`'s
    site-packages. `python -m venv --system-site-packages` from PREFIX/bin/python then sees torch, as on AutoDL.
    """
    probe = subprocess.run([str(source), "-c", "import os, sys, sysconfig; print(os.path.realpath(sys._base_executable)); "
                            "print(sys.base_prefix); print(sysconfig.get_paths()['purelib']); print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
                           capture_output=True, text=True, check=True)
    executable, base, purelib, version = probe.stdout.split("\n")[:4]
    stdlib = Path(base) / "lib" / version
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib" / version / "site-packages").mkdir(parents=True)
    shutil.copy2(executable, prefix / "bin" / version)
    (prefix / "bin" / "python").symlink_to(version)
    (prefix / "bin" / "python3").symlink_to(version)
    for entry in stdlib.iterdir():
        if entry.name != "site-packages":
            (prefix / "lib" / version / entry.name).symlink_to(entry)
    write(prefix / "lib" / version / "site-packages" / "zz-conda-like.pth", f"import site; site.addsitedir({purelib!r})\n")
    return prefix / "bin" / "python"


class AutodlLookalike:
    """The namespace, the host's files, the proxy, the hub and the sshd; `run()` runs playbooks/autodl.yml against it."""

    def __init__(self, root: Path, ns: Namespace, proxy: LoggingProxy, hub: HubServer, sshd: NamespacedSshd, conda_python: Path):
        self.root, self.ns, self.proxy, self.hub, self.sshd = root, ns, proxy, hub, sshd
        self.deploy_dir = root / "autodl-tmp" / "glmops"
        self.env = {"XDG_STATE_HOME": str(root / "state")}
        shipped = yaml.safe_load((ROOT / "inventory" / "autodl.yml").read_text())["all"]["children"]["autodl"]["vars"]
        self.vars = {**shipped, "deploy_dir": str(self.deploy_dir), "python_env_python": str(conda_python),
                     "network_turbo_file": str(root / "etc" / "network_turbo"),
                     "model_id": "ZhipuAI/tiny-chatglm3", "model_endpoint": hub.url,  # the hub stand-in for ModelScope
                     "embedding_model": "none", "client_env_file": str(root / "client.env"), "profile": "cpu"}

    def run(self, timeout: float = 900, **changes: Any) -> subprocess.CompletedProcess[str]:
        inventory = self.root / "inventory.yml"
        hosts = {HOST: self.sshd.hostvars()}
        inventory.write_text(yaml.safe_dump({"all": {"children": {"autodl": {"vars": {**self.vars, **changes}, "hosts": hosts}}}}))
        return glmops("run", str(PLAYBOOK), "-i", str(inventory), "--json", env=self.env, timeout=timeout)

    def server_pid(self) -> int | None:
        try:
            return int((self.deploy_dir / "run" / "server.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop_server(self) -> None:
        pid = self.server_pid()
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def _failures(output: str) -> str:
    return "\n".join(f"{e['host']} {e['task']}: {e.get('msg')}" for e in events(output)
                     if e["event"] == "host_result" and e["status"] in ("failed", "unreachable"))


@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory, tiny_chatglm: Path, pins_python: str) -> Iterator[AutodlLookalike]:
    root = tmp_path_factory.mktemp("autodl")
    conda_python = make_conda_like(root / "miniconda3", Path(pins_python))
    bin_dir = root / "standin-bin"
    write(bin_dir / "nvidia-smi", STAND_IN.replace("{csv}", f"'{SMI_3090[0]}'")).chmod(0o755)
    ns = Namespace()
    try:
        ns.create()
    except (RuntimeError, OSError) as exc:
        ns.delete()
        pytest.fail(f"cannot create the test's network namespace (needs root and iproute2): {exc}", pytrace=False)
    files = {str(p.relative_to(tiny_chatglm)): p.read_bytes() for p in sorted(tiny_chatglm.rglob("*")) if p.is_file()}
    proxy = LoggingProxy(ns.root_ip, allow=PYPI).start()
    hub = HubServer("ZhipuAI/tiny-chatglm3", files, host=ns.root_ip).__enter__()
    write(root / "etc" / "network_turbo", f"export http_proxy={proxy.url} && export https_proxy={proxy.url}\n"
                                          "export no_proxy=localhost,127.0.0.1,modelscope.com,aliyuncs.com\n")
    sshd = NamespacedSshd(str(root / "sshd"), bin_dir, ns)
    dep = None
    try:
        sshd.start()
        dep = AutodlLookalike(root, ns, proxy, hub, sshd, conda_python)
        start = time.monotonic()
        dep.cold = dep.run()  # type: ignore[attr-defined]
        dep.cold_s = time.monotonic() - start  # type: ignore[attr-defined]
        yield dep
    finally:
        if dep is not None:
            dep.stop_server()
        sshd.stop()
        hub.__exit__(None, None, None)
        proxy.stop()
        ns.delete()


def test_namespace_has_no_way_out_but_the_proxy(lookalike: AutodlLookalike) -> None:
    """The premise: from the host, PyPI answers only through the proxy."""
    ns = lookalike.ns.name
    direct = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-o", "/dev/null", "https://pypi.org/simple/"],
                            capture_output=True, text=True)
    assert direct.returncode != 0, "the namespace must not reach PyPI directly"
    proxied = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "30", "-o", "/dev/null", "-w", "%{http_code}",
                              "-x", lookalike.proxy.url, "https://pypi.org/simple/pip/"], capture_output=True, text=True)
    assert proxied.stdout == "200", proxied.stdout + proxied.stderr


def test_cold_deploy_reaches_a_healthy_api_with_the_shipped_pins(lookalike: AutodlLookalike) -> None:
    run = lookalike.cold  # type: ignore[attr-defined]
    print(f"cold deploy: {lookalike.cold_s:.0f} s")  # type: ignore[attr-defined]
    assert run.returncode == 0, _failures(run.stdout) + run.stderr[-3000:]
    assert "proxy variables set" in results(run.stdout, "Proxy in use")[HOST]["msg"]
    assert lookalike.proxy.url not in run.stdout + run.stderr, "the proxy's values are never printed"
    answer = results(run.stdout, "The answer")[HOST]
    assert answer["status"] == "ok" and "answers:" in answer["msg"], answer
    print(answer["msg"], lookalike.proxy.log)
    venv_python = lookalike.deploy_dir / "venv" / "bin" / "python"
    versions = subprocess.run([str(venv_python), "-c", "import importlib.metadata as m, torch; "
                               "print(m.version('transformers'), m.version('torch'), torch.__file__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    shipped = yaml.safe_load((ROOT / "roles" / "python_env" / "defaults" / "main.yml").read_text())
    assert f"transformers=={versions[0]}" == shipped["transformers_pin"]
    assert f"torch=={versions[1].split('+')[0]}" == shipped["torch_pin"]
    assert not versions[2].startswith(str(lookalike.deploy_dir)), "the conda interpreter's torch is reused, not installed again"
    config = yaml.safe_load((lookalike.deploy_dir / "api_server.yaml").read_text())
    assert config["model_path"] == str(lookalike.deploy_dir / "models" / "tiny-chatglm3")
    assert (config["backend"], config["device"]) == ("transformers", "cpu")


def test_pip_went_through_the_proxy_and_the_model_download_did_not(lookalike: AutodlLookalike) -> None:
    log = lookalike.proxy.log
    assert ("CONNECT", "pypi.org:443", 200) in log, log  # modelscope's pip install on the host
    site = lookalike.deploy_dir / "venv" / "lib"
    assert list(site.glob("python3*/site-packages/modelscope/__init__.py")), "modelscope was installed into the venv"
    hub = lookalike.hub
    assert any("/api/v1/models/ZhipuAI/tiny-chatglm3" in r for r in hub.requests), hub.requests
    assert hub.sent.get("model.safetensors"), "the weights came from the hub stand-in"
    assert not [entry for entry in log if lookalike.ns.root_ip in entry[1]], "the ModelScope download must not use the proxy"
    assert all(method == "CONNECT" and target.rsplit(":", 1)[0] in PYPI for method, target, _ in log), log  # only pip's


def test_rerun_changes_nothing(lookalike: AutodlLookalike) -> None:
    before = len(lookalike.proxy.log)
    run = lookalike.run()
    assert run.returncode == 0, _failures(run.stdout)
    changed = [(e["host"], e["task"]) for e in events(run.stdout) if e["event"] == "host_result" and e["status"] == "changed"]
    assert recap(run.stdout)[HOST]["changed"] == 0, changed
    assert len(lookalike.proxy.log) == before, "nothing to install: no pip on the re-run"


def _log_time(line: str) -> float:
    """The time of a server log line ('2026-12-04 16:40:01,123 ERROR ...', local time)."""
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_profile_auto_on_the_3090_without_cuda_fails_fast_with_the_servers_error(lookalike: AutodlLookalike) -> None:
    run = lookalike.run(timeout=300, profile="auto")  # the old wait went on for server_health_timeout (900 s)
    ended = time.time()
    assert run.returncode != 0, run.stdout[-3000:]
    assert results(run.stdout, "Gather GPU, memory and disk facts and choose the profile")[HOST]["msg"].startswith("fp16")
    log_lines = (lookalike.deploy_dir / "logs" / "server.log").read_text(errors="replace").splitlines()
    failed_at = [line for line in log_lines if "loading the model failed" in line]
    assert failed_at, "\n".join(log_lines[-30:])
    waited = ended - _log_time(failed_at[-1])
    assert waited < 60, f"the run went on for {waited:.0f} s after the server reported its load error"
    message = results(run.stdout, "The server did not become healthy")[HOST]["msg"]
    first = message.splitlines()[0]
    assert first.startswith(f"glmops serve on {HOST} could not load the model: "), message
    assert failed_at[-1].split("loading the model failed: ", 1)[1][:60] in message, message  # the server's own error line
    assert "GET /health" not in message
    assert len(message.splitlines()) <= 30
    print(f"failed {waited:.1f} s after the load error:\n{message}")
