"""`glmops doctor HOST`: the known ChatGLM3 deployment failures, looked for in one round trip, each with its fix."""

from __future__ import annotations

import json
from typing import Any

import click

from glmops.commands._hosts import connected, inventory_option, load_targets, run_command
from glmops.commands.complete import complete_hosts
from glmops.errors import EXIT_HOST_FAILED, EXIT_HOST_UNREACHABLE, ConnectionFailure

MARK = {"ok": ("green", "ok  "), "warn": ("yellow", "warn"), "fail": ("red", "FAIL"), "skip": ("bright_black", "skip")}

EPILOG = """\b
Exit codes: 0 nothing failed (warnings allowed); 2 at least one check failed; 4 a host was unreachable."""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.argument("host", shell_complete=complete_hosts)
@inventory_option
@click.option("--json", "as_json", is_flag=True, help="Print {host, ok, checks: [{id, level, message, fix}]} per host.")
def doctor(host: str, inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, as_json: bool) -> None:
    """Look on HOST for the known ChatGLM3 deployment failures and print each with its fix.

    \b
    transformers too new for ChatGLM3's remote code, a CPU-only torch on a GPU host, half precision
    on the CPU, quantization on mps, cpm_kernels missing, Git LFS pointer files instead of weights,
    too little VRAM / RAM / disk for the profile, the port taken, the embedding model path unset.
    """
    from glmops.doctor import diagnose, exit_code, gather_script_for, parse_gather

    def body() -> int:
        code = 0
        reports: list[dict[str, Any]] = []
        for target in load_targets(host, inventories, extra_vars):
            try:
                with connected(target, accept_new) as conn:
                    result = conn.run(gather_script_for(target.layout, target.variables), timeout=120)
            except ConnectionFailure as exc:
                click.secho(f"{target.name}: UNREACHABLE: {exc.message}", fg="magenta", err=True)
                reports.append({"host": target.name, "ok": False, "unreachable": True, "checks": []})
                if code != EXIT_HOST_FAILED:
                    code = EXIT_HOST_UNREACHABLE
                continue
            checks = diagnose(parse_gather(result.stdout), target.variables, target.layout)
            failed = exit_code(checks)
            if failed:
                code = EXIT_HOST_FAILED
            reports.append({"host": target.name, "ok": not failed, "checks": [c.as_dict() for c in checks]})
            if not as_json:
                click.echo(f"{target.name}:")
                for check in checks:
                    color, word = MARK.get(check.level, ("white", check.level))
                    click.echo(f"  {click.style(word, fg=color)}  {check.id:<15} {check.message}")
                    if check.fix and check.level in ("fail", "warn"):
                        click.echo(f"        {'':<15} fix: {check.fix}")
        if as_json:
            click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        return code

    run_command(body, as_json=as_json)
