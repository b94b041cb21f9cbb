"""The rich console renderer: a line per task per host, a spinner while a task runs, diffs, a recap."""

from __future__ import annotations

import json
import time
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
        self._bars: Any = None  # rich Progress while a task reports progress (terminal only)
        self._bar_ids: dict[str, Any] = {}  # host -> task id in self._bars
        self._last_line: dict[str, float] = {}  # host -> when a plain progress line was printed

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
        self._stop_bars()

    PLAIN_PROGRESS_INTERVAL = 10.0  # seconds between two progress lines of one host when not on a terminal

    def on_progress(self, event: dict[str, Any]) -> None:
        """A live bar per host on a terminal; elsewhere (CI logs) a line now and then."""
        host, done, total = event["host"], event["done"], event.get("total")
        label = f"[{host}] {event.get('msg') or event.get('task', '')}"
        if not self.console.is_terminal:
            now = time.monotonic()
            final = total is not None and done >= total
            if final or now - self._last_line.get(host, 0.0) >= self.PLAIN_PROGRESS_INTERVAL:
                self._last_line[host] = now
                self.console.print(Text(f"  progress: {label} {_amount(done, total, event.get('unit', 'B'))}", style="dim"))
            return
        self._stop_spinner()
        if self._bars is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bars = Progress(TextColumn("  {task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
            self._bars.start()
        amount = _amount(done, total, event.get("unit", "B"))
        if host not in self._bar_ids:
            self._bar_ids[host] = self._bars.add_task(escape(label), total=total, completed=done, amount=amount)
        else:
            self._bars.update(self._bar_ids[host], description=escape(label), total=total, completed=done, amount=amount)

    def _stop_bars(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        self._bar_ids.clear()
        self._last_line.clear()

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

    def on_interrupted(self, event: dict[str, Any]) -> None:
        self._stop_spinner()
        self.console.print(f"[bold red]interrupted[/]: stopping {escape(event['stopping'])} "
                           "(killing the commands it started); Ctrl-C again exits at once")

    def on_recap(self, event: dict[str, Any]) -> None:
        self._stop_spinner()
        self._stop_bars()
        self.console.print()
        if event.get("interrupted"):
            self.console.print("[bold red]run interrupted[/]: the tasks after the interruption did not run")
        self.console.rule("[bold]PLAY RECAP[/]", align="left")
        width = max((len(h) for h in event["stats"]), default=0)
        for host, stats in event["stats"].items():
            line = Text(host.ljust(width) + " : ", style="bold")
            for key in RECAP_KEYS:
                value = stats.get(key, 0)
                line.append(f"{key}={value} ", style=COLORS.get(key, "green") if value else "dim")
            self.console.print(line)
        self.console.print(f"[dim]finished in {event.get('duration', 0):.2f} s[/]")


def _amount(done: float, total: float | None, unit: str) -> str:
    """'1.2 GB / 12.5 GB (9%)', or '3 / 10 s' for other units."""

    def size(value: float) -> str:
        if unit != "B":
            return f"{value:g}"
        for suffix in ("B", "kB", "MB", "GB", "TB"):
            if abs(value) < 1000 or suffix == "TB":
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1000
        return str(value)  # pragma: no cover

    if total:
        return f"{size(done)} / {size(total)}{'' if unit == 'B' else ' ' + unit} ({100 * done / total:.0f}%)"
    return size(done) + ("" if unit == "B" else " " + unit)


def _is_debug(event: dict[str, Any]) -> bool:
    result = event.get("result") or {}
    return "verbosity" in result
