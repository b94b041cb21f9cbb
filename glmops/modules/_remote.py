"""Portable remote probes shared by the file modules: one sh command reads a path's whole state.

Works with GNU coreutils (Linux) and BSD tools (macOS): `stat -c` falls back to `stat -f`,
`sha256sum` to `shasum -a 256`.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass

from glmops.connection.base import CommandResult
from glmops.connection.partfile import sha256_cmd
from glmops.modules.base import Diff, ModuleContext

MAX_DIFF_BYTES = 256 * 1024


@dataclass
class PathState:
    """What is at a path on the host."""

    type: str  # absent | file | directory | link | other
    mode: str = ""  # octal, 4 digits: '0644'
    uid: int = -1
    gid: int = -1
    owner: str = ""
    group: str = ""
    size: int = 0
    mtime: int = 0
    target: str = ""  # link target
    sha256: str = ""

    @property
    def exists(self) -> bool:
        return self.type != "absent"


def probe_script(path: str, *, checksum: bool = False, content: bool = False) -> str:
    """sh that prints the state of `path` as key=value lines (and its content, base64, if asked)."""
    p = shlex.quote(path)
    parts = [
        f"p={p}",
        'if [ -L "$p" ]; then t=link; elif [ -d "$p" ]; then t=directory; elif [ -f "$p" ]; then t=file; '
        'elif [ -e "$p" ]; then t=other; else t=absent; fi',
        'echo "type=$t"',
        'if [ "$t" != absent ]; then '
        "echo \"stat=$(stat -c '%a %u %g %U %G %s %Y' -- \"$p\" 2>/dev/null || stat -f '%Lp %u %g %Su %Sg %z %m' -- \"$p\")\"; fi",
        'if [ "$t" = link ]; then echo "target=$(readlink -- "$p")"; fi',
    ]
    if checksum:
        parts.append(f'if [ "$t" = file ]; then echo "sha256=$({sha256_cmd(chr(34) + "$p" + chr(34))})"; fi')
    if content:
        parts.append(f'if [ "$t" = file ] && [ "$(wc -c < "$p")" -le {MAX_DIFF_BYTES} ]; then echo "content=$(base64 < "$p" | tr -d \'\\n\')"; fi')
    return "\n".join(parts)


def parse_probe(result: CommandResult) -> tuple[PathState, bytes | None]:
    """Turn probe_script's output into a PathState (and the file's content when it was asked for)."""
    import base64

    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    state = PathState(type=values.get("type", "absent"))
    if "stat" in values and values["stat"]:
        fields = values["stat"].split()
        if len(fields) >= 7:
            state.mode = fields[0].zfill(4)
            state.uid, state.gid = int(fields[1]), int(fields[2])
            state.owner, state.group = fields[3], fields[4]
            state.size, state.mtime = int(fields[5]), int(fields[6])
    state.target = values.get("target", "")
    state.sha256 = values.get("sha256", "")
    content = base64.b64decode(values["content"]) if "content" in values else None
    return state, content


def probe(ctx: ModuleContext, path: str, *, checksum: bool = False, content: bool = False) -> tuple[PathState, bytes | None]:
    """Read the state of `path` on the host with one command."""
    result = ctx.run(probe_script(path, checksum=checksum, content=content))
    if result.rc != 0:
        raise OSError(f"cannot inspect {path}: {result.stderr.strip()}")
    return parse_probe(result)


def normalize_mode(mode: object) -> str | None:
    """'0644', '644' or an int (YAML reads 0644 as the number 0o644, as Ansible does) -> '0644'.

    None stays None; symbolic modes (u+rwx,g-w) are returned as they are.
    """
    if mode is None or mode == "":
        return None
    if isinstance(mode, bool):
        raise ValueError(f"invalid mode {mode!r}")
    if isinstance(mode, int):
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"invalid mode {mode!r}")
        return format(mode, "04o")
    text = str(mode).strip()
    if text.isdigit():
        if any(c in "89" for c in text) or int(text, 8) > 0o7777:
            raise ValueError(f"invalid mode {mode!r}: write it as a quoted octal string such as '0644'")
        return format(int(text, 8), "04o")
    return text


def text_diff(before: bytes | str | None, after: bytes | str, path: str) -> Diff:
    """A unified diff of two texts for --diff output."""

    def as_text(value: bytes | str | None) -> str:
        if value is None:
            return ""
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return value

    return Diff(before=as_text(before), after=as_text(after), before_header=f"{path} (before)", after_header=f"{path} (after)")


def unified(diff: Diff) -> str:
    """Render a Diff as unified diff text."""
    lines = difflib.unified_diff(
        diff.before.splitlines(keepends=True), diff.after.splitlines(keepends=True), diff.before_header, diff.after_header
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
