"""wait_for: wait until a port opens or closes, or a file appears, disappears or contains a pattern."""

from __future__ import annotations

import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

# Probing a TCP port portably: nc, else bash's /dev/tcp, else python3.
PORT_OPEN = (
    "port_open() {{ "
    "if command -v nc >/dev/null 2>&1; then nc -z -w {ct} {host} {port} >/dev/null 2>&1; "
    "elif command -v bash >/dev/null 2>&1; then timeout {ct} bash -c 'exec 3<>\"/dev/tcp/$1/$2\"' _ {host} {port} >/dev/null 2>&1; "
    "else python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), {ct}).close()' {host} {port} >/dev/null 2>&1; fi; }}"
)


class WaitForModule(Module):
    name = "wait_for"
    doc = (
        "Wait, on the host, until a TCP port is open (`state: started`) or closed (`stopped`), or a "
        "file exists (`present`), is gone (`absent`), or contains `search_regex`. One remote loop; "
        "fails with the time waited when `timeout` passes. Never changes anything."
    )
    args = {
        "host": Arg("str", default="127.0.0.1", word=True, help="Address to probe (from the host itself)."),
        "port": Arg("int", help="TCP port."),
        "path": Arg("path", help="A file to wait for."),
        "state": Arg("str", default="started", choices=("started", "stopped", "present", "absent"), help="What to wait for."),
        "search_regex": Arg("str", word=True, help="With path: wait until the file contains this (grep -E) pattern."),
        "timeout": Arg("int", default=300, help="Seconds to wait at most."),
        "delay": Arg("int", default=0, help="Seconds to wait before the first check."),
        "sleep": Arg("float", default=0.5, help="Seconds between checks."),
        "connect_timeout": Arg("int", default=5, help="Seconds for each port probe."),
        "msg": Arg("str", help="Message on timeout."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if args.get("port") is None and not args.get("path"):
            if args["state"] in ("present", "absent", "started", "stopped") and args.get("delay"):
                return  # a plain sleep, as Ansible allows
            raise ArgumentError("give 'port' or 'path'", field="port")
        if args.get("port") is not None and args.get("path"):
            raise ArgumentError("give only one of 'port' and 'path'", field="path")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        state = args["state"]
        if args.get("port") is not None:
            setup = PORT_OPEN.format(ct=int(args["connect_timeout"]), host=shlex.quote(args["host"]), port=int(args["port"]))
            test = "port_open" if state in ("started", "present") else "! port_open"
            what = f"port {args['host']}:{args['port']} to {'open' if state in ('started', 'present') else 'close'}"
        elif args.get("path"):
            p = shlex.quote(args["path"])
            setup = ":"
            if args.get("search_regex") and state in ("present", "started"):
                test = f"grep -Eq -e {shlex.quote(args['search_regex'])} -- {p} 2>/dev/null"
                what = f"{args['path']} to contain {args['search_regex']!r}"
            elif state in ("present", "started"):
                test, what = f"[ -e {p} ]", f"{args['path']} to exist"
            else:
                test, what = f"[ ! -e {p} ]", f"{args['path']} to be removed"
        else:
            setup, test, what = ":", "true", "the delay"
        script = (
            f"{setup}; sleep {int(args['delay'])}; start=$(date +%s); "
            f"while :; do if {test}; then echo \"elapsed=$(( $(date +%s) - start ))\"; exit 0; fi; "
            f"[ $(( $(date +%s) - start )) -ge {int(args['timeout'])} ] && {{ echo \"elapsed=$(( $(date +%s) - start ))\"; exit 1; }}; "
            f"sleep {float(args['sleep'])}; done"
        )
        done = ctx.run(script, timeout=args["timeout"] + args["delay"] + 30)
        elapsed = int(done.stdout.strip().rpartition("=")[2] or 0) if "elapsed=" in done.stdout else None
        data = {"elapsed": elapsed, "state": state}
        if done.rc != 0:
            return ModuleResult(failed=True, msg=args.get("msg") or f"timed out after {args['timeout']} s waiting for {what}", data=data)
        return ModuleResult(data=data)


MODULE = WaitForModule
