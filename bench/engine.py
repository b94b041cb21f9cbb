#!/usr/bin/env python3
"""Side-by-side benchmark of the playbook engine: glmops vs ansible-playbook vs pyinfra.

One run starts sshd instances on 127.0.0.1 (the project's test sshd), installs ansible-core and
pyinfra into their own virtualenvs under bench/.work/ (reused when present), and times, on the same
hosts and the same 10-task playbook (bench/playbook.yml; pyinfra: bench/deploy_pyinfra.py):

- a cold run (fresh target directories) and an idempotent re-run, on 1 host;
- the re-run fanned out to 1, 5 and 20 hosts;
- `glmops --help`.

It prints medians and ratios. Usage:

    .venv/bin/python bench/engine.py [--repeat 5] [--hosts 1,5,20] [--json-out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
sys.path.insert(0, str(ROOT / "tests"))

from sshd import SshServer  # noqa: E402

GLMOPS = [sys.executable, "-m", "glmops"]


def venv_tool(name: str, package: str) -> Path:
    """bench/.work/NAME/bin/..., created on first use."""
    venv = WORK / name
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {package.split('-')[0].replace('-', '_')}"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {package} into {venv} ...", flush=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package], check=True)
    return venv / "bin"


def write_inventories(servers: list[SshServer], directory: Path) -> tuple[Path, Path]:
    """One YAML inventory for glmops and ansible, one inventory.py for pyinfra."""
    import yaml

    hosts = {}
    for index, server in enumerate(servers):
        hosts[f"h{index:02d}"] = {
            **server.hostvars(),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
    inventory = directory / f"hosts-{len(servers)}.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    entries = ",\n".join(
        f'    ("h{i:02d}", {{"ssh_hostname": "{s.host}", "ssh_port": {s.port}, "ssh_user": "root", "ssh_key": "{s.client_key}", '
        f'"ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "no"}})'
        for i, s in enumerate(servers)
    )
    pyinfra_inventory = directory / f"inventory_{len(servers)}.py"
    pyinfra_inventory.write_text(f"hosts = [\n{entries},\n]\n")
    return inventory, pyinfra_inventory


def ansible_cfg(directory: Path, pipelining: bool) -> Path:
    path = directory / f"ansible-{'pipe' if pipelining else 'plain'}.cfg"
    state = directory / "ansible-state"
    state.mkdir(exist_ok=True)
    path.write_text(
        "[defaults]\n"
        "host_key_checking = False\n"
        f"home = {state}\nlocal_tmp = {state}/tmp\nremote_tmp = /tmp/.ansible-bench\n"
        "forks = 20\ninterpreter_python = /usr/bin/python3\nretry_files_enabled = False\n"
        "[ssh_connection]\n"
        f"pipelining = {pipelining}\ncontrol_path_dir = {state}/cp\n"
    )
    return path


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def clean_targets() -> None:
    shutil.rmtree("/tmp/glmops-bench", ignore_errors=True)


def stop_control_masters(state: Path) -> None:
    for socket_path in (state / "cp").glob("*") if (state / "cp").exists() else []:
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", "x"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--hosts", default="1,5,20")
    parser.add_argument("--quick", action="store_true", help="repeat 2, hosts 1,5")
    parser.add_argument("--json-out")
    parser.add_argument("--fast-shell", action="store_true", help="sshd skips root's heavy .bashrc (SetEnv SHLVL=1)")
    parser.add_argument("--only", help="comma-separated tools to run (glmops, 'ansible (pipelining)', 'ansible (default)', pyinfra)")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.hosts = 2, "1,5"
    fanout = [int(n) for n in args.hosts.split(",")]
    WORK.mkdir(exist_ok=True)
    # Byte-compile glmops as a pip install does (this machine sets PYTHONDONTWRITEBYTECODE), so every
    # tool starts from compiled code.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "glmops")], env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""}, check=True)
    ansible_bin = venv_tool("ansible", "ansible-core")
    pyinfra_bin = venv_tool("pyinfra", "pyinfra")
    tmp = Path(tempfile.mkdtemp(prefix="glmops-bench-"))
    servers = [SshServer(str(tmp / f"sshd{i}"), fast_shell=args.fast_shell).start() for i in range(max(fanout))]
    only = set(args.only.split(",")) if args.only else None
    env_glmops = {"PYTHONPATH": str(ROOT)}
    cfg_plain, cfg_pipe = ansible_cfg(tmp, False), ansible_cfg(tmp, True)
    results: dict[str, dict[str, float]] = {}

    def tools(inventory: Path, pyinfra_inventory: Path) -> dict[str, tuple[list[str], dict[str, str], Path | None]]:
        playbook = str(BENCH / "playbook.yml")
        chosen = {
            "glmops": (GLMOPS + ["run", playbook, "-i", str(inventory), "--forks", "20"], env_glmops, None),
            "ansible (pipelining)": ([str(ansible_bin / "ansible-playbook"), "-i", str(inventory), playbook], {"ANSIBLE_CONFIG": str(cfg_pipe)}, None),
            "ansible (default)": ([str(ansible_bin / "ansible-playbook"), "-i", str(inventory), playbook], {"ANSIBLE_CONFIG": str(cfg_plain)}, None),
            "pyinfra": ([str(pyinfra_bin / "pyinfra"), "-y", str(pyinfra_inventory), "deploy_pyinfra.py"], {}, BENCH),
        }
        return {name: tool for name, tool in chosen.items() if only is None or name in only}

    try:
        inventory, pyinfra_inventory = write_inventories(servers[:1], tmp)
        for name, (command, env, cwd) in tools(inventory, pyinfra_inventory).items():
            cold, rerun = [], []
            for _ in range(args.repeat):
                clean_targets()
                stop_control_masters(tmp / "ansible-state")
                cold.append(timed(command, env, cwd))
                rerun.append(timed(command, env, cwd))
            results.setdefault(name, {})["cold 1 host"] = statistics.median(cold)
            results[name]["re-run 1 host"] = statistics.median(rerun)
            print(f"{name:22s} cold {statistics.median(cold):6.2f} s   re-run {statistics.median(rerun):6.2f} s", flush=True)
        for count in fanout[1:]:
            inventory, pyinfra_inventory = write_inventories(servers[:count], tmp)
            for name, (command, env, cwd) in tools(inventory, pyinfra_inventory).items():
                if name == "ansible (default)":
                    continue  # pipelining is what anyone tuning Ansible uses; it only gets slower without
                timed(command, env, cwd)  # make every host converge first
                samples = [timed(command, env, cwd) for _ in range(args.repeat)]
                results[name][f"re-run {count} hosts"] = statistics.median(samples)
                print(f"{name:22s} re-run {count:2d} hosts {statistics.median(samples):6.2f} s", flush=True)
        helps = [timed(GLMOPS + ["--help"], env_glmops) for _ in range(max(args.repeat, 5))]
        results["glmops"]["--help"] = statistics.median(helps)
    finally:
        stop_control_masters(tmp / "ansible-state")
        for server in servers:
            server.stop()
        clean_targets()
        shutil.rmtree(tmp, ignore_errors=True)
    if set(results) >= {"glmops", "ansible (default)", "ansible (pipelining)", "pyinfra"}:
        report(results, fanout)
    else:
        print(json.dumps(results, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, float]], fanout: list[int]) -> None:
    columns = sorted({c for r in results.values() for c in r if c != "--help"}, key=lambda c: (c.startswith("re-run"), int(c.split()[1]) if c.split()[1].isdigit() else 0))
    print("\nmedian seconds")
    print(f"{'':22s}" + "".join(f"{c:>16s}" for c in columns))
    for name, row in results.items():
        print(f"{name:22s}" + "".join(f"{row[c]:16.2f}" if c in row else f"{'-':>16s}" for c in columns))
    g = results["glmops"]
    print("\nratios (how many times faster glmops is)")
    for name in ("ansible (default)", "ansible (pipelining)", "pyinfra"):
        cells = [f"{c}: {results[name][c] / g[c]:.1f}x" for c in columns if c in results[name] and c in g]
        print(f"  vs {name:20s} " + "   ".join(cells))
    last = f"re-run {fanout[-1]} host{'s' if fanout[-1] > 1 else ''}"
    scale = g[last] / g["re-run 1 host"] if last in g else float("nan")
    print(f"\nglmops {last} / 1 host: {scale:.2f}x    glmops --help: {g['--help']:.3f} s")
    targets = [
        ("re-run >= 10x faster than ansible-playbook (default)", results["ansible (default)"]["re-run 1 host"] / g["re-run 1 host"] >= 10),
        ("re-run >= 10x faster than ansible-playbook (pipelining)", results["ansible (pipelining)"]["re-run 1 host"] / g["re-run 1 host"] >= 10),
        ("re-run >= 3x faster than pyinfra", results["pyinfra"]["re-run 1 host"] / g["re-run 1 host"] >= 3),
        (f"{last} <= 2x 1 host", scale <= 2),
        ("glmops --help <= 0.3 s", g["--help"] <= 0.3),
    ]
    print("\ntargets")
    for text, met in targets:
        print(f"  [{'met' if met else 'MISSED'}] {text}")


if __name__ == "__main__":
    main()
