#!/usr/bin/env python3
"""Side-by-side benchmark of the playbook engine: glmops vs ansible-playbook vs pyinfra.

One run starts sshd instances on loopback (the project's test sshd, tests/sshd.py; host N listens
on 127.0.0.N+1), installs ansible-core and pyinfra into their own virtualenvs under bench/.work/
(reused when present), and times, on the same hosts and the same 10-task playbook
(bench/playbook.yml, run unchanged by glmops and ansible-playbook; pyinfra runs the equivalent
bench/deploy_pyinfra.py):

- a cold run (fresh target directories) and an idempotent re-run, on 1 host;
- the re-run fanned out to every count of --hosts (default 1, 5 and 20);
- `glmops --help`.

Each figure is the median of --repeat runs. A tool that fails is reported and left out; the
others still run. Usage:

    .venv/bin/python bench/engine.py [--repeat 5] [--hosts 1,5,20] [--quick] [--json-out FILE]
                                     [--shell heavy|fast|both] [--only glmops,pyinfra,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
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
TARGET_DIR = "/tmp/glmops-bench"  # bench/playbook.yml and deploy_pyinfra.py write under it
TOOLS = ("glmops", "ansible (pipelining)", "ansible (default)", "pyinfra")
TARGETS = {"ansible": 10.0, "pyinfra": 3.0, "fanout": 2.0, "help": 0.3}


def glmops_command() -> list[str]:
    """The installed console script when there is one (what users run), else `python -m glmops`."""
    script = ROOT / ".venv" / "bin" / "glmops"
    return [str(script)] if script.exists() else [sys.executable, "-m", "glmops"]


def venv_tool(name: str, package: str, module: str) -> Path:
    """bench/.work/NAME/bin, a virtualenv with `package` installed (created on first use)."""
    venv = WORK / name
    if not (venv / "bin" / "python").exists():
        print(f"creating {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], capture_output=True).returncode != 0:
        print(f"installing {package} into {venv} ...", flush=True)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package], capture_output=True, text=True)
        if pip.returncode != 0:
            sys.exit(f"pip install {package} failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}")
    return venv / "bin"


def version_of(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def write_inventories(servers: list, directory: Path) -> tuple[Path, Path]:
    """One YAML inventory for glmops and ansible, one inventory.py for pyinfra, for these servers."""
    import yaml

    hosts = {}
    for index, server in enumerate(servers):
        hosts[f"h{index:02d}"] = {
            **server.hostvars(),  # ansible_host/port/user/key, glmops_known_hosts (host key verified)
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
    """An ansible.cfg that keeps all of Ansible's state under `directory` (RECIPES section 8)."""
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


class ToolFailed(RuntimeError):
    pass


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 900) -> float:
    """Wall time of one run; a non-zero exit is ToolFailed with the end of its output."""
    return run_once(command, env, cwd, timeout)[0]


def run_once(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 900) -> tuple[float, str]:
    """(wall time, stdout) of one run; a non-zero exit is ToolFailed with the end of its output."""
    started = time.perf_counter()
    try:
        result = subprocess.run(command, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"{shlex.join(command[:4])} ... timed out after {timeout:.0f} s") from None
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = (result.stdout[-1500:] + "\n" + result.stderr[-1500:]).strip()
        raise ToolFailed(f"{shlex.join(command[:4])} ... exited {result.returncode}:\n{tail}")
    return elapsed, result.stdout


def clean_targets() -> None:
    shutil.rmtree(TARGET_DIR, ignore_errors=True)


def stop_control_masters(state: Path) -> None:
    """Ansible's ControlPersist masters would outlive the run: ask each to exit."""
    for socket_path in (state / "cp").glob("*") if (state / "cp").exists() else []:
        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={socket_path}", "x"], capture_output=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is reported (default 5)")
    parser.add_argument("--hosts", default="1,5,20", help="host counts for the re-run fan-out (default 1,5,20)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: repeat 2, hosts 1,5")
    parser.add_argument("--json-out", metavar="FILE", help="also write every sample and median as JSON")
    parser.add_argument("--shell", choices=("heavy", "fast", "both"), default="heavy",
                        help="heavy: root's .bashrc runs on every login (as on AutoDL); fast: sshd skips it (SetEnv SHLVL=1)")
    parser.add_argument("--fast-shell", action="store_true", help="same as --shell fast")
    parser.add_argument("--only", help=f"comma-separated tools to run, from: {', '.join(TOOLS)}")
    parser.add_argument("--ansible-default-fanout", action="store_true",
                        help="also fan out ansible without pipelining (slow: ~1 s per host and task)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.hosts = 2, "1,5"
    if args.fast_shell:
        args.shell = "fast"
    if args.only:
        unknown = set(args.only.split(",")) - set(TOOLS)
        if unknown:
            parser.error(f"unknown tool(s) {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}")
    return args


def run_shell_variant(args: argparse.Namespace, fast: bool, bins: dict[str, Path], tmp: Path) -> dict:
    """Every measurement with one kind of sshd; returns {'medians', 'samples', 'errors'}."""
    sys.path.insert(0, str(ROOT / "tests"))
    from sshd import SshServer  # the test suite's sshd (CONN helper): same config the tests use

    fanout = sorted({int(n) for n in args.hosts.split(",")} | {1})
    only = set(args.only.split(",")) if args.only else set(TOOLS)
    state = tmp / ("fast" if fast else "heavy")
    state.mkdir()
    cfg_plain, cfg_pipe = ansible_cfg(state, False), ansible_cfg(state, True)
    playbook = str(BENCH / "playbook.yml")
    medians: dict[str, dict[str, float]] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, str] = {}
    idempotence: dict[str, bool] = {}  # cold run changed things and the re-run changed nothing

    def commands(inventory: Path, pyinfra_inventory: Path) -> dict[str, tuple[list[str], dict[str, str], Path | None]]:
        chosen = {
            "glmops": (glmops_command() + ["run", playbook, "-i", str(inventory), "--forks", "20"], {"PYTHONPATH": str(ROOT)}, None),
            "ansible (pipelining)": ([str(bins["ansible"] / "ansible-playbook"), "-i", str(inventory), playbook], {"ANSIBLE_CONFIG": str(cfg_pipe)}, None),
            "ansible (default)": ([str(bins["ansible"] / "ansible-playbook"), "-i", str(inventory), playbook], {"ANSIBLE_CONFIG": str(cfg_plain)}, None),
            "pyinfra": ([str(bins["pyinfra"] / "pyinfra"), "-y", str(pyinfra_inventory), "deploy_pyinfra.py"], {}, BENCH),
        }
        return {name: tool for name, tool in chosen.items() if name in only and name not in errors}

    def record(name: str, column: str, values: list[float]) -> None:
        samples.setdefault(name, {})[column] = values
        medians.setdefault(name, {})[column] = statistics.median(values)

    def fail(name: str, exc: ToolFailed) -> None:
        errors[name] = str(exc)
        print(f"{name:22s} FAILED (left out of the rest of this run):\n    " + str(exc).replace("\n", "\n    "), flush=True)

    print(f"\n== sshd {'without' if fast else 'with'} root's .bashrc per login ({'fast' if fast else 'heavy'} shell) ==", flush=True)
    servers = []
    try:
        for index in range(max(fanout)):
            servers.append(SshServer(str(state / f"sshd{index}"), host=f"127.0.0.{index + 2}", fast_shell=fast).start())
        inventory, pyinfra_inventory = write_inventories(servers[:1], state)
        for name, (command, env, cwd) in commands(inventory, pyinfra_inventory).items():
            cold, rerun = [], []
            try:
                for _ in range(args.repeat):
                    clean_targets()
                    stop_control_masters(state / "ansible-state")
                    seconds, cold_out = run_once(command, env, cwd)
                    cold.append(seconds)
                    seconds, rerun_out = run_once(command, env, cwd)
                    rerun.append(seconds)
            except ToolFailed as exc:
                fail(name, exc)
                continue
            if name != "pyinfra":  # its shell operations have no `creates`: they always run
                converged = "changed=0" in rerun_out and "changed=0" not in cold_out
                idempotence[name] = converged
                if not converged:
                    print(f"{name:22s} WARNING: the cold run did not change, or the re-run changed, something:\n{rerun_out[-1500:]}")
            record(name, "cold 1 host", cold)
            record(name, "re-run 1 host", rerun)
            print(f"{name:22s} cold {medians[name]['cold 1 host']:6.2f} s   re-run {medians[name]['re-run 1 host']:6.2f} s", flush=True)
        for count in fanout[1:]:
            inventory, pyinfra_inventory = write_inventories(servers[:count], state)
            for name, (command, env, cwd) in commands(inventory, pyinfra_inventory).items():
                if name == "ansible (default)" and not args.ansible_default_fanout:
                    continue  # anyone tuning Ansible turns pipelining on; without it, it is only slower
                try:
                    timed(command, env, cwd)  # every host converges first
                    values = [timed(command, env, cwd) for _ in range(args.repeat)]
                except ToolFailed as exc:
                    fail(name, exc)
                    continue
                record(name, f"re-run {count} hosts", values)
                print(f"{name:22s} re-run {count:2d} hosts {medians[name][f're-run {count} hosts']:6.2f} s", flush=True)
    finally:
        stop_control_masters(state / "ansible-state")
        for server in servers:
            server.stop()
        clean_targets()
    return {"medians": medians, "samples": samples, "errors": errors, "re-run changed nothing": idempotence}


def help_time(repeat: int) -> tuple[float, list[float]]:
    command = glmops_command() + ["--help"]
    values = []
    for _ in range(max(repeat, 5)):
        values.append(timed(command, {"PYTHONPATH": str(ROOT)}))
    return statistics.median(values), values


def report(medians: dict[str, dict[str, float]], help_seconds: float | None, errors: dict[str, str]) -> list[tuple[str, str]]:
    """Print the table, ratios and targets of one shell variant; returns [(target, met|MISSED|n/a)]."""
    columns: list[str] = []
    for row in medians.values():
        columns.extend(c for c in row if c not in columns)
    columns.sort(key=lambda c: (c.startswith("re-run"), int(c.split()[1])))
    print("\nmedian seconds")
    print(f"{'':22s}" + "".join(f"{c:>16s}" for c in columns))
    for name in TOOLS:
        if name in medians:
            print(f"{name:22s}" + "".join(f"{medians[name][c]:16.2f}" if c in medians[name] else f"{'-':>16s}" for c in columns))
        elif name in errors:
            print(f"{name:22s}  failed: {errors[name].splitlines()[0]}")
    g = medians.get("glmops", {})
    if g:
        print("\nratios: the other tool's time / glmops' time (how many times faster glmops is)")
        for name in TOOLS[1:]:
            if name in medians:
                cells = [f"{c}: {medians[name][c] / g[c]:.1f}x" for c in columns if c in medians[name] and c in g]
                print(f"  {name:22s} " + "   ".join(cells))
    most = max((int(c.split()[1]) for c in g if c.startswith("re-run")), default=1)
    last = f"re-run {most} hosts"
    scale = g[last] / g["re-run 1 host"] if most > 1 and last in g and "re-run 1 host" in g else None
    if scale is not None:
        print(f"\nglmops {most} hosts / 1 host (re-run): {scale:.2f}x")
    if help_seconds is not None:
        print(f"glmops --help: {help_seconds:.3f} s")

    def ratio(name: str) -> float | None:
        if name in medians and "re-run 1 host" in medians[name] and "re-run 1 host" in g:
            return medians[name]["re-run 1 host"] / g["re-run 1 host"]
        return None

    checks = [  # (text, value, bound, value must be at least the bound, unit)
        (f"re-run >= {TARGETS['ansible']:.0f}x faster than ansible-playbook (default)", ratio("ansible (default)"), TARGETS["ansible"], True, "x"),
        (f"re-run >= {TARGETS['ansible']:.0f}x faster than ansible-playbook (pipelining)", ratio("ansible (pipelining)"), TARGETS["ansible"], True, "x"),
        (f"re-run >= {TARGETS['pyinfra']:.0f}x faster than pyinfra", ratio("pyinfra"), TARGETS["pyinfra"], True, "x"),
        (f"re-run on {most if most > 1 else 'N'} hosts <= {TARGETS['fanout']:.0f}x the time of 1 host", scale, TARGETS["fanout"], False, "x"),
        (f"glmops --help <= {TARGETS['help']} s", help_seconds, TARGETS["help"], False, " s"),
    ]
    print("\ntargets")
    outcome = []
    for text, value, bound, at_least, unit in checks:
        state = "n/a" if value is None else ("met" if (value >= bound if at_least else value <= bound) else "MISSED")
        shown = "" if value is None else f" ({value:.2f}{unit})"
        print(f"  [{state}] {text}{shown}")
        outcome.append((text, state))
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    WORK.mkdir(exist_ok=True)
    # Byte-compile glmops as a pip install does (this machine sets PYTHONDONTWRITEBYTECODE), so every
    # tool starts from compiled code.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "glmops")], env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""}, check=True)
    bins = {"ansible": venv_tool("ansible", "ansible-core", "ansible"), "pyinfra": venv_tool("pyinfra", "pyinfra", "pyinfra")}
    versions = {
        "glmops": version_of(glmops_command() + ["--version"]),
        "glmops commit": version_of(["git", "-C", str(ROOT), "log", "-1", "--format=%h %cI"]),
        "ansible-core": version_of([str(bins["ansible"] / "ansible-playbook"), "--version"]),
        "pyinfra": version_of([str(bins["pyinfra"] / "pyinfra"), "--version"]),
        "python": sys.version.split()[0],
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
    }
    print("command: " + shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable,
                                     os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])]))
    for key, value in versions.items():
        print(f"{key}: {value}")
    tmp = Path(tempfile.mkdtemp(prefix="glmops-bench-"))
    variants = {"heavy": [False], "fast": [True], "both": [False, True]}[args.shell]
    results: dict = {"command": sys.argv, "versions": versions, "repeat": args.repeat, "targets": TARGETS, "runs": {}}
    try:
        help_seconds: float | None = None
        help_samples: list[float] = []
        if args.only is None or "glmops" in args.only.split(","):
            try:
                help_seconds, help_samples = help_time(args.repeat)
            except ToolFailed as exc:
                print(f"glmops --help FAILED: {exc}")
        results["glmops --help"] = {"median": help_seconds, "samples": help_samples}
        for fast in variants:
            run = run_shell_variant(args, fast, bins, tmp)
            run["targets"] = report(run["medians"], help_seconds, run["errors"])
            results["runs"]["fast shell" if fast else "heavy shell"] = run
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json_out}")
    return 1 if any(run["errors"] for run in results["runs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
