"""Benchmark of model_fetch's upload: a model-like folder to a host over SSH, against scp -r and rsync.

    .venv/bin/python bench/fetch.py [--size-mb 1024] [--files 4] [--repeat 3]

One sshd on 127.0.0.1 (the test suite's, tests/sshd.py, with SetEnv SHLVL=1 so that no tool pays
for root's .bashrc). Measured, each into a fresh destination:
- upload: `glmops run` of a one-task playbook (model_fetch source: upload: transfer, sha256 of every
  file on both sides, manifest) vs `scp -r` vs `rsync -a` (both without verification beyond their
  own transport checksums) vs `scp -r` followed by `sha256sum` of the files on the host (the same
  work as glmops), alternating, `--repeat` times; wall time of the whole command.
- resume: `glmops run` is SIGKILLed once half of the bytes are on the host; the re-run's bytes on the
  wire are read from the server's sftp-server process (/proc/PID/io rchar), compared with what was
  missing.
- re-verify: model_fetch on the verified folder over an open connection (what a playbook re-run
  pays for the task), and a whole `glmops run` re-run.
Results: printed, and written to bench/.work/fetch/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work" / "fetch"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_source(folder: Path, size_mb: int, files: int) -> int:
    """A model-like folder: `files` shards of equal size plus config files; reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = size_mb * 1024 * 1024 // files
    for index in range(files):
        path = folder / f"model-{index + 1:05d}-of-{files:05d}.safetensors"
        if not path.exists() or path.stat().st_size != shard:
            with open(path, "wb") as handle:
                for _ in range(shard // (1 << 20)):
                    handle.write(os.urandom(1 << 20))
                handle.write(os.urandom(shard % (1 << 20)))
    (folder / "config.json").write_text(json.dumps({"model_type": "chatglm", "hidden_size": 4096}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ChatGLMTokenizer"}))
    return sum(p.stat().st_size for p in folder.iterdir())


def on_host_bytes(dest: Path) -> int:
    """Bytes under dest (finished files and part files)."""
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.exists() else 0


def sftp_rchar(server) -> int:  # noqa: ANN001
    """Bytes the server's sftp-server processes read from their connection (what clients sent)."""
    total = 0
    for pid in server.sessions():
        try:
            if b"sftp-server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            total += int(next(line.split()[1] for line in Path(f"/proc/{pid}/io").read_text().splitlines() if line.startswith("rchar:")))
        except (OSError, StopIteration):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from helpers import inventory, write
    from sshd import SshServer

    from glmops.connection.factory import open_connection
    from glmops.modules import get_module
    from glmops.modules.base import ModuleContext, validate_args
    from glmops.playbook.templating import Templar

    WORK.mkdir(parents=True, exist_ok=True)
    src = WORK / "src"
    total = make_source(src, args.size_mb, args.files)
    dest = WORK / "dest"
    server = SshServer(str(WORK / "sshd"), fast_shell=True).start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    inv = inventory(WORK / "hosts.yml", {"target": server.hostvars()})
    book = write(WORK / "upload.yml", f"""
        - hosts: all
          gather_facts: false
          tasks:
            - name: upload
              model_fetch: {{source: upload, src: "{src}", dest: "{dest}"}}
        """)
    ssh_opts = ["-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-i", server.client_key]
    tools = {
        "glmops model_fetch upload": [sys.executable, "-m", "glmops", "run", str(book), "-i", str(inv), "--json"],
        "scp -r": ["scp", "-q", "-r", *ssh_opts, "-P", str(server.port), str(src), f"root@127.0.0.1:{dest}"],
        "rsync -a": ["rsync", "-a", "-e", " ".join(["ssh", *ssh_opts, "-p", str(server.port)]), f"{src}/", f"root@127.0.0.1:{dest}/"],
        # The same work as glmops (a SHA-256 of every file on the host after the copy), for a like-for-like figure.
        "scp -r + sha256sum on the host": ["sh", "-c", " ".join(["scp", "-q", "-r", *ssh_opts, "-P", str(server.port), str(src), f"root@127.0.0.1:{dest}"])
                                           + " && " + " ".join(["ssh", *ssh_opts, "-p", str(server.port), "root@127.0.0.1", f"'sha256sum {dest}/*'"])
                                           + " > /dev/null"],
    }

    def fresh() -> None:
        subprocess.run(["rm", "-rf", str(dest)], check=True)

    def timed(cmd: list[str]) -> float:
        fresh()
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        assert on_host_bytes(dest) >= total, "the copy is incomplete"
        return elapsed

    results: dict = {"size_bytes": total, "files": args.files + 2, "repeat": args.repeat, "upload_s": {}, "command": " ".join(sys.argv)}
    try:
        samples: dict[str, list[float]] = {name: [] for name in tools}
        for round_ in range(args.repeat):
            for name, cmd in tools.items():
                samples[name].append(timed(cmd))
                print(f"round {round_ + 1} {name:28s} {samples[name][-1]:6.2f} s", flush=True)
        for name, values in samples.items():
            median = statistics.median(values)
            results["upload_s"][name] = {"median": median, "samples": values, "MB_per_s": total / median / 1e6}
        scp = results["upload_s"]["scp -r"]["median"]
        results["glmops_vs_scp_throughput"] = scp / results["upload_s"]["glmops model_fetch upload"]["median"]

        # -- resume after a kill at 50 % -----------------------------------------------------
        fresh()
        proc = subprocess.Popen(tools["glmops model_fetch upload"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        while on_host_bytes(dest) < total // 2 and proc.poll() is None:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # the server notices the dropped connection and its sftp-server ends
        kept = on_host_bytes(dest)
        missing = total - kept
        module = get_module("model_fetch")
        margs = validate_args(module, {"source": "upload", "src": str(src), "dest": str(dest)}, final=True)
        conn = open_connection("target", server.hostvars())
        conn.connect()
        conn._sftp_client()  # type: ignore[attr-defined]  # count from here: the SFTP server is up
        baseline = sftp_rchar(server)
        started = time.perf_counter()
        resumed = module.run(ModuleContext(conn=conn, host="target", templar=Templar()), margs)
        resume_s = time.perf_counter() - started
        wire = sftp_rchar(server) - baseline
        assert resumed.changed and not resumed.failed, resumed.msg
        results["resume"] = {"killed_at_bytes_on_host": kept, "missing_bytes": missing, "bytes_sent_reported": resumed.data["bytes_sent"],
                             "sftp_bytes_read_by_server": wire, "overhead_vs_missing": wire / missing - 1, "seconds": resume_s}
        print(f"resume: {kept / total:.1%} was on the host; missing {missing} B, sent {wire} B on the wire "
              f"({wire / missing - 1:+.3%}), {resume_s:.2f} s", flush=True)

        # -- re-verify a verified folder -------------------------------------------------------
        ctx = ModuleContext(conn=conn, host="target", templar=Templar())
        times = []
        for _ in range(5):
            started = time.perf_counter()
            again = module.run(ctx, margs)
            times.append(time.perf_counter() - started)
            assert not again.changed and not again.failed, again.msg
        conn.close()
        rerun = []
        for _ in range(3):
            started = time.perf_counter()
            done = subprocess.run(tools["glmops model_fetch upload"], env=env, capture_output=True, text=True)
            rerun.append(time.perf_counter() - started)
            assert done.returncode == 0, done.stdout + done.stderr
        results["reverify"] = {"module_s_median": statistics.median(times), "module_s": times,
                               "glmops_run_s_median": statistics.median(rerun), "glmops_run_s": rerun}
        print(f"re-verify: model_fetch on the verified folder {statistics.median(times) * 1000:.0f} ms (median of 5); "
              f"whole `glmops run` re-run {statistics.median(rerun):.2f} s", flush=True)
    finally:
        server.stop()
        fresh()
    print("\n| tool | median s | MB/s |\n| --- | ---: | ---: |")
    for name, row in results["upload_s"].items():
        print(f"| {name} | {row['median']:.2f} | {row['MB_per_s']:.0f} |")
    print(f"glmops throughput vs scp: {results['glmops_vs_scp_throughput']:.0%}")
    (WORK / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
