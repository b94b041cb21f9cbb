"""Resume-then-verify (glmops.connection.partfile): the decisions, one behaviour per case.
(The transfers themselves are tested over real sshd: test_connection*.py, test_modules_net.py.)"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from glmops.connection.partfile import (MISMATCH_RC, Verified, finish_script, follow_sha256_script, local_sha256, parse_verified,
                                        resume_offset)

SOURCE = b"0123456789" * 10


def _prefix(length: int) -> str:
    return hashlib.sha256(SOURCE[:length]).hexdigest()


@pytest.mark.parametrize(
    "have,remote,expected",
    [
        (None, None, 0),  # no part file
        (0, _prefix(0), 0),  # an empty part: nothing to keep
        (40, _prefix(40), 40),  # a matching prefix is kept
        (100, _prefix(100), 100),  # complete but never moved into place
        (40, _prefix(39), 0),  # same length, other bytes: started over
        (40, None, 0),  # the host could not hash it
        (101, _prefix(100), 0),  # longer than the source: cannot be a prefix
    ],
)
def test_resume_offset(have: int | None, remote: str | None, expected: int) -> None:
    assert resume_offset(have, len(SOURCE), _prefix, lambda: remote) == expected


def test_local_sha256_of_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(SOURCE)
    assert local_sha256(str(path)) == _prefix(100) and local_sha256(str(path), 33) == _prefix(33)


def _finish(tmp_path: Path, **expected: object) -> subprocess.CompletedProcess[str]:
    part, dest = tmp_path / "f.part", tmp_path / "f"
    script = finish_script(str(part), f"mv -f '{part}' '{dest}'", **expected)  # type: ignore[arg-type]
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)


@pytest.mark.parametrize(
    "expected,rc,message",
    [
        ({}, 0, ""),
        ({"size": 100, "sha256": _prefix(100)}, 0, ""),
        ({"sha256": _prefix(100).upper()}, 0, ""),
        ({"size": 99}, MISMATCH_RC, "size mismatch: expected 99 bytes, got 100"),
        ({"sha256": _prefix(1)}, MISMATCH_RC, f"checksum mismatch: got sha256:{_prefix(100)}"),
    ],
)
def test_finish_script_installs_only_a_verified_part(tmp_path: Path, expected: dict, rc: int, message: str) -> None:
    (tmp_path / "f.part").write_bytes(SOURCE)
    done = _finish(tmp_path, **expected)
    assert done.returncode == rc and message in done.stderr
    assert parse_verified(done.stdout) == Verified(100, _prefix(100))
    assert (tmp_path / "f").exists() == (rc == 0)
    assert not (tmp_path / "f.part").exists()  # moved, or removed because it was wrong


def test_finish_script_without_a_part_fails_without_installing(tmp_path: Path) -> None:
    done = _finish(tmp_path, size=1)
    assert done.returncode not in (0, MISMATCH_RC) and parse_verified(done.stdout) is None and not (tmp_path / "f").exists()


def test_follow_sha256_script_hashes_what_is_appended_after_the_offset(tmp_path: Path) -> None:
    part = tmp_path / "f.part"
    part.write_bytes(b"kept prefix")
    follow = subprocess.Popen(["/bin/sh", "-c", follow_sha256_script(str(part), len(b"kept prefix"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pieces = [bytes([n]) * 300_000 for n in range(5)]
    with open(part, "ab") as handle:  # written while the script follows the file
        for piece in pieces:
            handle.write(piece)
            handle.flush()
    out, err = follow.communicate(b"")  # end of input: the writer is done
    assert follow.returncode == 0 and err == b""
    assert out.decode().strip() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_finish_script_with_a_streamed_hash_checks_only_the_size(tmp_path: Path) -> None:
    (tmp_path / "f.part").write_bytes(SOURCE)
    done = _finish(tmp_path, size=100, sha256=_prefix(1), hashed=_prefix(1))  # no second pass over the bytes
    assert done.returncode == 0 and parse_verified(done.stdout) == Verified(100, _prefix(1)) and (tmp_path / "f").exists()
    (tmp_path / "f.part").write_bytes(SOURCE[:50])
    short = _finish(tmp_path, size=100, sha256=_prefix(100), hashed=_prefix(100))
    assert short.returncode == MISMATCH_RC and "size mismatch: expected 100 bytes, got 50" in short.stderr
    assert not (tmp_path / "f.part").exists()
