"""Resume-then-verify, shared by every large transfer (the SFTP upload, `get_url`'s download).

A transfer writes into a deterministic *part file* (so a second run finds it), continues from it
after an interruption when what is there is a prefix of what is wanted, and only a part file whose
size and sha256 were checked on the host is moved into place: the destination is never half-written
and a corrupt part is removed instead of installed.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass

CHUNK = 1 << 20
MISMATCH_RC = 65  # exit code of finish_script() when the part file is not what was expected


def sha256_cmd(quoted_path: str) -> str:
    """sh that prints the sha256 (hex only) of an already quoted path, on Linux and macOS."""
    return f"{{ sha256sum -- {quoted_path} 2>/dev/null || shasum -a 256 -- {quoted_path}; }} | cut -d' ' -f1"


def local_sha256(path: str, limit: int | None = None) -> str:
    """The sha256 of a controller file, or of its first `limit` bytes."""
    digest = hashlib.sha256()
    left = limit
    with open(path, "rb") as handle:
        while left is None or left > 0:
            chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


def resume_offset(have: int | None, size: int, local_prefix: Callable[[int], str], remote_sum: Callable[[], str | None]) -> int:
    """How many bytes of an existing part file (`have` bytes, None when there is none) to keep.

    The part is kept only when it is not longer than the whole (`size`) and its sha256
    (`remote_sum()`) is that of the same prefix of the source (`local_prefix(have)`); else 0.
    """
    if not have or have > size:
        return 0
    return have if remote_sum() == local_prefix(have) else 0


@dataclass(frozen=True)
class Verified:
    size: int
    sha256: str


def follow_sha256_script(part: str, offset: int) -> str:
    """sh that hashes the part file from byte `offset` on *while it is being written* (GNU tail -f).

    It follows the file until its standard input reaches end-of-file (the writer is done), reads what
    is left and prints the sha256 (hex only) of those bytes. Anything on stderr (no GNU tail, the
    file truncated under it) means the printed sum must not be trusted.
    """
    q = shlex.quote(part)
    return (
        "exec 3<&0; cat <&3 >/dev/null & w=$!; exec 3<&-\n"
        "if command -v openssl >/dev/null 2>&1; then h='openssl dgst -sha256 -r'; "  # OpenSSL uses the CPU's SHA instructions
        "elif command -v sha256sum >/dev/null 2>&1; then h=sha256sum; else h='shasum -a 256'; fi\n"
        f"tail -c +{int(offset) + 1} -s 0.1 -f --pid=\"$w\" -- {q} | $h | cut -d' ' -f1"
    )


def part_name(dest: str) -> str:
    """The part file of a transfer to `dest` beside it: DIR/.NAME.glmops-part (found again by the next run)."""
    directory, name = posixpath.split(dest)
    return posixpath.join(directory, f".{name}.glmops-part")


def prepare_part_script(part: str) -> str:
    """sh that makes the part file safe to write into and prints its size in bytes.

    The name is predictable, so something may have been planted there: anything that is not a
    regular file (a symlink pointing elsewhere, a fifo) is removed, never written through. A missing
    part is created new (noclobber: O_EXCL) and private (umask 077); a kept one loses group and other
    access, which it keeps until its final mode is set on install.
    """
    q = shlex.quote(part)
    return (
        f"if [ -L {q} ] || {{ [ -e {q} ] && [ ! -f {q} ]; }}; then rm -f -- {q} || exit 1; fi\n"
        f"[ -e {q} ] || (umask 077 && set -C && : > {q}) || exit 1\n"
        f"chmod go-rwx -- {q} && wc -c < {q} | tr -d ' '"
    )


def finish_script(part: str, install: str, *, size: int | None = None, sha256: str | None = None,
                  hashed: str | None = None) -> str:
    """sh that verifies the part file on the host and, when it is right, runs `install` (which moves it).

    Only a regular file is ever installed: a part that is missing, or that became a symlink (which
    `install` would otherwise move into place), fails with exit 1.

    Prints `size=N` and `sha256=HEX` (read them with `parse_verified`). When `size` or `sha256` is
    given and differs, the part file is removed and the script exits MISMATCH_RC with the reason
    on stderr ("checksum mismatch: ..." or "size mismatch: ..."). `hashed` is a sha256 already
    established on the host while the part was written (see follow_sha256_script): then only the
    size is checked here, with no second pass over the data.
    """
    q = shlex.quote(part)
    summed = shlex.quote(hashed.lower()) if hashed is not None else f"$({sha256_cmd(q)})"
    lines = [
        f"[ -f {q} ] && [ ! -L {q} ] || {{ echo {shlex.quote('the part file ' + part + ' is missing or not a regular file')} >&2; exit 1; }}",
        f"size=$(wc -c < {q} | tr -d ' ') && sum={summed} || exit $?",
        'echo "size=$size"; echo "sha256=$sum"',
    ]
    if size is not None:
        lines.append(f'[ "$size" = {int(size)} ] || {{ rm -f {q}; echo "size mismatch: expected {int(size)} bytes, got $size" >&2; '
                     f"exit {MISMATCH_RC}; }}")
    if sha256 is not None:
        lines.append(f'[ "$sum" = {shlex.quote(sha256.lower())} ] || {{ rm -f {q}; echo "checksum mismatch: got sha256:$sum" >&2; '
                     f"exit {MISMATCH_RC}; }}")
    lines.append(install)
    return "\n".join(lines)


def parse_verified(stdout: str) -> Verified | None:
    """The size and sha256 that finish_script printed, or None when it printed none."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if line.startswith(("size=", "sha256=")))
    if "size" not in values or "sha256" not in values or not values["size"].strip().isdigit():
        return None
    return Verified(int(values["size"].strip()), values["sha256"].strip())
