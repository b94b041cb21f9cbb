"""The rich console renderer: a line per task per host, a spinner while a task runs, diffs, a recap."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from glmops.modules._remote import unified
from glmops.modules.base import Diff

RECAP_KEYS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
COLORS = {"ok": "green", "changed": "yellow", "skipped": "cyan", "failed": "red", "unreachable": "bold red", "ignored": "magenta"}


class ConsoleRenderer:
    def __init__(self, verbosity: int = 0, diff: bool = False, console: Console | None = None):
        self.console = console or Console(highlight=False)
        self.verbosity = verbosity
        self.diff = diff
        self._status: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        handler = getattr(self, "on_" + event["event"], None)
        if handler:
            handler(event)

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def on_playbook_start(self, event: dict[str, Any]) -> None:
        if event.get("check"):
            self.console.print("[bold]check mode[/]: nothing will be changed")

    def on_play_start(self, event: dict[str, Any]) -> None:
        self.console.rule(f"[bold]PLAY[/] {escape(event['play'])}  [dim]({len(event['hosts'])} host{'s' if len(event['hosts']) != 1 else ''})[/]", align="left")

    def on_task_start(self, event: dict[str, Any]) -> None:
        prefix = "HANDLER" if event.get("handler") else "TASK"
        role = f"{event['role']} : " if event.get("role") else ""
        self.console.print(f"[bold]{prefix}[/] {escape(role + event['task'])}" + (f" [dim]{event['pos']}[/]" if self.verbosity >= 2 else ""))
        if self.console.is_terminal:
            self._status = self.console.status(f"{escape(event['task'])} ...", spinner="dots")
            self._status.start()

    def on_task_end(self, event: dict[str, Any]) -> None:
        self._stop_spinner()

    def on_item_result(self, event: dict[str, Any]) -> None:
        color = COLORS.get(event["status"], "white")
        item = event["item"] if isinstance(event["item"], str) else json.dumps(event["item"], ensure_ascii=False, default=str)
        self.console.print(f"  [{color}]{event['status']}[/]: {escape('[' + event['host'] + ']')} (item={escape(item)})" + (f" {escape(event['msg'])}" if event.get("msg") and event["status"] == "failed" else ""))

    def on_retry(self, event: dict[str, Any]) -> None:
        self.console.print(f"  [dim]retrying[/]: {escape('[' + event['host'] + ']')} attempt {event['attempt']} of {event['retries']}")

    def on_warning(self, event: dict[str, Any]) -> None:
        self._stop_spinner()
        self.console.print(f"  [yellow][WARNING][/] {escape('[' + event['host'] + ']')} {escape(event['msg'])}")

    def on_host_result(self, event: dict[str, Any]) -> None:
        status = "ignored" if event.get("ignored") else event["status"]
        color = COLORS.get(status, "white")
        label = "failed (ignored)" if event.get("ignored") else event["status"]
        line = Text.from_markup(f"  [{color}]{label}[/]: {escape('[' + event['host'] + ']')} [dim]{event.get('duration', 0):.2f}s[/]")
        msg = event.get("msg") or ""
        if msg and (event["status"] in ("failed", "unreachable") or self.verbosity or _is_debug(event)):
            line.append(" " + msg, style=color if event["status"] in ("failed", "unreachable") else None)
        self.console.print(line)
        result = event.get("result") or {}
        if _is_debug(event):
            for key, value in result.items():
                if key not in ("changed", "failed", "msg", "verbosity", "skipped"):
                    self.console.print(f"    {escape(key)}: {escape(json.dumps(value, ensure_ascii=False, default=str))}")
        if self.verbosity or event["status"] == "failed":
            for key in ("stdout", "stderr"):
                if result.get(key):
                    self.console.print(Text(f"    {key}: ", style="dim") + Text(str(result[key])))
        if self.verbosity >= 2:
            self.console.print(Text("    " + json.dumps(result, ensure_ascii=False, default=str, indent=None), style="dim"))
        if self.diff:
            for diff in event.get("diff") or []:
                self._print_diff(Diff(**diff))

    def _print_diff(self, diff: Diff) -> None:
        for line in unified(diff).splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else "cyan" if line.startswith("@@") else None
            self.console.print(Text("    " + line, style=style))

    def on_recap(self, event: dict[str, Any]) -> None:
        self._stop_spinner()
        self.console.print()
        self.console.rule("[bold]PLAY RECAP[/]", align="left")
        width = max((len(h) for h in event["stats"]), default=0)
        for host, stats in event["stats"].items():
            line = Text(host.ljust(width) + " : ", style="bold")
            for key in RECAP_KEYS:
                value = stats.get(key, 0)
                line.append(f"{key}={value} ", style=COLORS.get(key, "green") if value else "dim")
            self.console.print(line)
        self.console.print(f"[dim]finished in {event.get('duration', 0):.2f} s[/]")


def _is_debug(event: dict[str, Any]) -> bool:
    result = event.get("result") or {}
    return "verbosity" in result
