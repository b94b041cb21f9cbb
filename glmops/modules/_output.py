"""Long program output shortened for a message, keeping what matters at both ends."""

from __future__ import annotations


def excerpt(output: str, head: int = 12, tail: int = 8, width: int = 300) -> str:
    """`output` shortened in the middle: its first lines (what went wrong first: pip's proxy or index
    warnings) and its last (the verdict); each line at most `width` characters."""
    lines = [line[:width] for line in output.strip().splitlines()]
    if len(lines) <= head + tail:
        return "\n".join(lines)
    return "\n".join([*lines[:head], f"... ({len(lines) - head - tail} lines left out) ...", *lines[-tail:]])
