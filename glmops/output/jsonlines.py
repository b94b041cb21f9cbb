"""--json: one JSON object per event per line on stdout, for CI and scripts."""

from __future__ import annotations

import json
import sys
from typing import IO, Any


class JsonLinesRenderer:
    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False, default=_text) + "\n")
        self.stream.flush()


def _text(value: Any) -> str:
    """Any other value as text; never raises (an object whose str() fails is shown by its type)."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - output must not end the run
        return f"<{type(value).__name__}>"
