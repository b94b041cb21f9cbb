"""The state files of open tunnels (`glmops tunnel`), read and written here.

Every open tunnel (foreground or background) keeps a small JSON state file in the user's state
directory ($XDG_STATE_HOME/glmops/tunnels, ~/.local/state/glmops/tunnels, or
%LOCALAPPDATA%\\glmops\\tunnels on Windows): pid, host, ports, and its live figures. Shell completion
reads them too, without importing the tunnel command.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    """Where tunnel state files live (created on demand)."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "glmops" / "tunnels"


def state_path(host: str, local_port: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
    return state_dir() / f"{safe}-{local_port}.json"


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


PID_MAX = 2**31 - 1  # pid_t is a signed 32-bit int (Linux stays below 2**22)


def read_states(on_bad: Callable[[Path, str], None] | None = None) -> list[dict[str, Any]]:
    """Every state file, each with its `path`. A file that is not a state (unreadable, not JSON, no valid
    pid) is left out; `on_bad(path, why)` is told about it."""
    folder = state_dir()
    if not folder.is_dir():
        return []
    states = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            if on_bad is not None:
                on_bad(path, f"it is not readable JSON ({exc})")
            continue
        pid = data.get("pid") if isinstance(data, dict) else None
        if type(pid) is not int or not 0 < pid <= PID_MAX:
            if on_bad is not None:
                on_bad(path, f"its pid {pid!r} is not a process id (a whole number from 1 to {PID_MAX})")
            continue
        data["path"] = str(path)
        states.append(data)
    return states
