"""--json: one JSON object per event per line on stdout, for CI and scripts."""

from __future__ import annotations

import json
import sys
from typing import IO, Any


class JsonLinesRenderer:
    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()
