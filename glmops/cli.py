"""The `glmops` command line. Each subcommand lives in its own module under glmops/commands/ and is
imported only when used, so `glmops --help` stays fast (no paramiko, no torch)."""

from __future__ import annotations

import importlib
import sys

import click

from glmops import __version__

# name -> (module, attribute, one-line help shown by `glmops --help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "up": ("glmops.commands.up", "up", "From an `ssh -p PORT user@host` login line to a chat answer: plan, deploy, tunnel, answer."),
    "down": ("glmops.commands.up", "down", "Close the tunnel to a host `glmops up` deployed and stop its server (--purge: remove it)."),
    "run": ("glmops.commands.run", "run", "Run a playbook (a file, or a shipped one by name: autodl, local, ...) against an inventory."),
    "init": ("glmops.commands.init", "init", "Write an editable copy of the shipped playbooks and inventory examples."),
    "inventory": ("glmops.commands.inventory", "inventory", "List hosts, or add one from an `ssh -p PORT user@host` line."),
    "tunnel": ("glmops.commands.tunnel", "tunnel", "Reach a host's API server through an SSH tunnel that reconnects; status, stop."),
    "serve": ("glmops.server.cli", "serve", "Start the OpenAI-compatible ChatGLM3 API server (target side)."),
    "status": ("glmops.commands.day2", "status", "Is the API server up? pid, uptime, model, device, GPU memory, /health per host."),
    "logs": ("glmops.commands.day2", "logs", "Show (or follow with -f) the API server's log on a host."),
    "stop": ("glmops.commands.day2", "stop", "Stop the API server on a host."),
    "restart": ("glmops.commands.day2", "restart", "Restart the API server on a host and wait until it is healthy."),
    "facts": ("glmops.commands.day2", "facts", "GPUs, VRAM, driver, CUDA, RAM, disk, AutoDL, and the profile a deploy would choose."),
    "doctor": ("glmops.commands.doctor", "doctor", "Look for the known ChatGLM3 deployment failures on a host; print each fix."),
    "chat": ("glmops.commands.chat", "chat", "Ask the deployed model one question (through a tunnel or the host's SSH)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, _, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glmops")
def cli() -> None:
    """glmops: deploy ChatGLM3-6B behind an OpenAI-compatible API, Ansible-style.

    \b
      glmops up "ssh -p 12345 root@region-9.autodl.com"
      glmops run autodl -i inventory/autodl.yml
      glmops inventory add autodl -- ssh -p 12345 root@region-9.autodl.com
    """


def main() -> None:
    """Console entry point."""
    try:
        cli(prog_name="glmops")
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("interrupted", err=True)
        sys.exit(99)


if __name__ == "__main__":  # pragma: no cover
    main()
