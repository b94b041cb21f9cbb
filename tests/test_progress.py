"""The progress part of the module contract: throttled events, the console's bar and plain lines."""

from __future__ import annotations

import io

from rich.console import Console

from glmops.connection.local import LocalConnection
from glmops.modules.base import ModuleContext
from glmops.output.console import ConsoleRenderer


def test_progress_is_throttled_but_the_final_report_always_goes_out() -> None:
    seen: list[dict] = []
    ctx = ModuleContext(conn=LocalConnection(), host="h", report=seen.append)
    for done in range(1, 1001):
        ctx.progress(done, 1000, "fetching")
    assert 1 <= len(seen) < 10  # a tight loop does not flood the renderers
    assert seen[-1] == {"done": 1000, "total": 1000, "msg": "fetching", "unit": "B"}


def test_progress_without_a_reporter_is_a_no_op() -> None:
    ModuleContext(conn=LocalConnection(), host="h").progress(1, 2)


def test_console_prints_plain_progress_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    renderer = ConsoleRenderer(console=Console(file=out, force_terminal=False, width=200))
    renderer({"event": "progress", "host": "gpu1", "task": "fetch", "done": 1_200_000_000, "total": 12_500_000_000, "msg": "model.safetensors", "unit": "B"})
    renderer({"event": "progress", "host": "gpu1", "task": "fetch", "done": 2_000_000_000, "total": 12_500_000_000, "msg": "model.safetensors", "unit": "B"})
    renderer({"event": "progress", "host": "gpu1", "task": "fetch", "done": 12_500_000_000, "total": 12_500_000_000, "msg": "done", "unit": "B"})
    lines = [line for line in out.getvalue().splitlines() if "progress" in line]
    assert lines[0].strip() == "progress: [gpu1] model.safetensors 1.2 GB / 12.5 GB (10%)"
    assert len(lines) == 2  # the middle one came too soon; the final one always prints
    assert lines[1].strip().endswith("12.5 GB / 12.5 GB (100%)")


def test_console_draws_a_bar_per_host_on_a_terminal() -> None:
    out = io.StringIO()
    renderer = ConsoleRenderer(console=Console(file=out, force_terminal=True, width=120))
    for host in ("a", "b"):
        renderer({"event": "progress", "host": host, "task": "fetch", "done": 5, "total": 10, "msg": "waiting", "unit": "s"})
    renderer({"event": "task_end", "task": "fetch"})
    text = out.getvalue()
    assert "[a] waiting" in text and "[b] waiting" in text and "5 / 10 s (50%)" in text


def test_ctx_run_streams_lines_with_the_task_environment(tmp_path) -> None:
    # The command can only finish once the callback saw its first line (else it times out: rc 124).
    flag = tmp_path / "go"
    lines: list[tuple[str, str]] = []

    def on_line(stream: str, line: str) -> None:
        lines.append((stream, line))
        flag.touch()

    ctx = ModuleContext(conn=LocalConnection(), host="h", environment={"WHO": "module"})
    result = ctx.run(f'echo "step 1 by $WHO"; while [ ! -e {flag} ]; do sleep 0.05; done; echo done >&2', timeout=30, on_line=on_line)
    assert result.rc == 0 and lines == [("stdout", "step 1 by module"), ("stderr", "done")]
