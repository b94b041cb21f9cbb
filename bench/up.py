"""Benchmark of issue 18: from `pip install` of the glmops wheel into an empty venv to the first streamed
answer of `glmops up` on loopback, and the time of a re-run of `glmops up NAME -y` (goal <= 3 s).

    .venv/bin/python bench/up.py [--cold-pip-cache] [--reruns 3]

One run: build the wheel (timed apart), start a throwaway sshd on 127.0.0.1 that takes root's password
(tests/sshd.py, as tests/test_up.py), make the tiny models, then the timed part: an empty venv outside the
checkout, `pip install WHEEL`, `glmops up "ssh -p PORT root@127.0.0.1" -y --playbook local ...` with the
password on stdin, until the first chunk of the streamed answer shows on its stdout. Then `glmops up NAME -y`
again (each wall time, changed=0), `glmops down NAME -y`, and everything it started is stopped by pid.

Like tests/test_up.py's `User`, the user is private (HOME, XDG_*, GLMOPS_KNOWN_HOSTS, GLMOPS_INVENTORY="")
and the target's venv is made beforehand with a .pth to this interpreter's site-packages (torch, transformers
4.57.6: as tests/test_wheel.py), so the deploy keeps that torch and downloads nothing heavy.
--cold-pip-cache: the pip install of the wheel into the empty venv uses an empty PIP_CACHE_DIR (only that step).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sshd import SshServer, free_port  # noqa: E402

PASSWORD = "bench-S3cret-pw"
PROMPT_LINE = b"> \xe4\xbd\xa0\xe5\xa5\xbd"  # "> 你好": the question glmops up asks, before the streamed answer


def load() -> str:
    """The load average (1, 5, 15 min)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build_wheel(out: Path) -> Path:
    """`python -m build --wheel` of the checkout into `out`."""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=900)
    return next(out.glob("glmops-*.whl"))


class Bench:
    """The private user, the sshd, and the processes and files the run owns."""

    def __init__(self, root: Path, cold_cache: bool):
        self.root, self.cold_cache = root, cold_cache
        self.server = SshServer(str(root / "sshd"), password=PASSWORD, fast_shell=True)
        self.venv = root / "user-venv"
        self.deploy_dir = root / "deploy"
        self.workdir = root / "elsewhere"  # no checkout here
        self.workdir.mkdir()
        (root / "home").mkdir()
        (root / "ssh_config").write_text("")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_CACHE_DIR")}
        self.env.update({"HOME": str(root / "home"), "XDG_CONFIG_HOME": str(root / "config"),
                         "XDG_STATE_HOME": str(root / "state"), "XDG_CACHE_HOME": str(root / "cache"),
                         "GLMOPS_KNOWN_HOSTS": str(root / "known_hosts"), "GLMOPS_INVENTORY": "",
                         "GLMOPS_SSH_CONFIG": str(root / "ssh_config"), "COLUMNS": "200",
                         "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})
        if "PIP_CACHE_DIR" in os.environ:
            self.env["PIP_CACHE_DIR"] = os.environ["PIP_CACHE_DIR"]
        self.api_port, self.local_port = free_port(), free_port()

    @property
    def name(self) -> str:
        return f"127-0-0-1-{self.server.port}"

    def glmops(self, *args: str, input: str = "", timeout: float = 300) -> tuple[float, subprocess.CompletedProcess]:
        """The installed venv's glmops, from a folder with no checkout; (wall seconds, result)."""
        start = time.monotonic()
        done = subprocess.run([str(self.venv / "bin" / "glmops"), *args], env=self.env, cwd=self.workdir, input=input,
                              capture_output=True, text=True, timeout=timeout)
        return time.monotonic() - start, done

    def target_venv(self) -> None:
        """The target's venv, made beforehand with a .pth to this interpreter's packages (torch etc.)."""
        venv = self.deploy_dir / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                      check=True, capture_output=True, text=True).stdout.strip())
        (purelib / "bench_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")

    def pip_install(self, wheel: Path) -> tuple[float, float]:
        """An empty venv, then `pip install WHEEL`; (venv seconds, pip seconds)."""
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True, timeout=300)
        made = time.monotonic()
        env = dict(self.env)
        if self.cold_cache:
            env["PIP_CACHE_DIR"] = str(self.root / "empty-pip-cache")
        done = subprocess.run([str(self.venv / "bin" / "pip"), "install", "--disable-pip-version-check", str(wheel)],
                              env=env, cwd=self.workdir, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise SystemExit(f"pip install failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return made - start, time.monotonic() - made

    def first_up(self, model: Path, started: float) -> tuple[float, float, str]:
        """`glmops up LOGIN -y ...` with the password on stdin; (seconds from `started` to the first answer
        chunk on stdout, seconds of the whole up, its output)."""
        values = {"deploy_dir": self.deploy_dir, "api_port": self.api_port, "transformers_pin": "transformers==4.57.6",
                  "embedding_model": "none", "server_health_timeout": 600}
        extra = [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]
        argv = [str(self.venv / "bin" / "glmops"), "up", f"ssh -p {self.server.port} root@127.0.0.1", "-y", "--playbook", "local",
                "--profile", "cpu", "--model-from", str(model), "--local-port", str(self.local_port), *extra]
        up_start = time.monotonic()
        proc = subprocess.Popen(argv, env=self.env, cwd=self.workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdin and proc.stdout
        proc.stdin.write((PASSWORD + "\n").encode())
        proc.stdin.close()
        out, first = b"", None
        fd = proc.stdout.fileno()
        deadline = up_start + 1800
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 5)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if first is None and PROMPT_LINE in out:
                after = out.partition(PROMPT_LINE)[2].partition(b"\n")
                if after[1] and after[2].strip():  # the question's line is done and answer text followed it
                    first = time.monotonic()
        else:
            proc.kill()
        code = proc.wait()
        text = out.decode(errors="replace")
        if code or first is None:
            raise SystemExit(f"glmops up failed (exit {code}):\n{text[-5000:]}")
        return first - started, time.monotonic() - up_start, text

    def stop(self) -> None:
        """`glmops down NAME -y` (if the venv exists), then by pid: the server, the tunnels, the sshd."""
        if (self.venv / "bin" / "glmops").exists():
            _, down = self.glmops("down", self.name, "-y")
            print(f"glmops down: exit {down.returncode}: {down.stdout.strip().splitlines()[-1:] or down.stderr.strip()[-300:]}")
            self.glmops("tunnel", "stop", "--all")
        pid_file = self.deploy_dir / "run" / "server.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.server.stop()
        left = leftovers(self.root)
        print(f"processes of this run left after down: {left or 'none'}")


def leftovers(root: Path) -> list[int]:
    """Pids whose command line names this run's folder (its sshd, server, tunnels): none are expected."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and str(root).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-pip-cache", action="store_true", help="an empty pip cache for the pip install of the wheel")
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()
    load_start = load()
    root = Path(tempfile.mkdtemp(prefix="glmops-bench-up-"))
    bench = Bench(root, options.cold_pip_cache)
    rows: list[tuple[str, str]] = []
    try:
        start = time.monotonic()
        wheel = build_wheel(root / "dist")
        rows.append(("build the wheel (not in the span)", f"{time.monotonic() - start:.1f} s"))
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_models.py"), str(root / "models")], check=True,
                       capture_output=True, timeout=600)
        bench.server.start()
        bench.target_venv()
        started = time.monotonic()
        made, pip = bench.pip_install(wheel)
        rows.append(("python -m venv (empty)", f"{made:.1f} s"))
        rows.append((f"pip install WHEEL ({'cold' if options.cold_pip_cache else 'warm'} pip cache)", f"{pip:.1f} s"))
        to_answer, up_total, out = bench.first_up(root / "models" / "tiny-chatglm3", started)
        rows.append(("glmops up LOGIN: whole command", f"{up_total:.1f} s"))
        rows.append(("SPAN: start of venv+pip install -> first answer chunk", f"{to_answer:.1f} s"))
        recap = re.search(rf"{re.escape(bench.name)}\s*:.*changed=\d+.*", out)
        rows.append(("  first up's recap", re.sub(r"\s+", " ", recap.group(0).strip()) if recap else "(none)"))
        answer = out.encode().partition(PROMPT_LINE)[2].partition(b"\n")[2].decode().strip().splitlines()
        rows.append(("  its streamed answer (start)", (answer[0] if answer else "")[:60]))
        for n in range(1, options.reruns + 1):
            seconds, again = bench.glmops("up", bench.name, "-y")
            recap = re.search(rf"{re.escape(bench.name)}\s*:.*changed=(\d+)", again.stdout)
            changed = recap.group(1) if recap else "?"
            status = "ok" if again.returncode == 0 else f"exit {again.returncode}"
            rows.append((f"glmops up NAME -y, re-run {n} ({status}, changed={changed})", f"{seconds:.2f} s"))
            if again.returncode:
                print((again.stdout + again.stderr)[-3000:])
    finally:
        bench.stop()
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
    rows.append(("load average at start", load_start))
    rows.append(("load average at end", load()))
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"({os.cpu_count()} CPUs; python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
