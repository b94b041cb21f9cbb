"""file, copy, template, lineinfile, stat, fetch: real effects, idempotence, check mode, diff; over SSH and locally."""

from __future__ import annotations

from pathlib import Path

import pytest
from modhelp import run_module




def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o7777)[2:].zfill(4)


def test_file_states(any_conn, tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    assert run_module(any_conn, "file", path=str(d), state="directory", mode="0750", check=True).changed and not d.exists()
    assert run_module(any_conn, "file", path=str(d), state="directory", mode="0750").changed
    assert d.is_dir() and mode(d) == "0750"
    assert not run_module(any_conn, "file", path=str(d), state="directory", mode="0750").changed
    assert run_module(any_conn, "file", path=str(d), mode=0o700).changed and mode(d) == "0700"
    f = tmp_path / "f"
    assert run_module(any_conn, "file", path=str(f), state="touch").changed and f.exists()
    link = tmp_path / "l"
    assert run_module(any_conn, "file", path=str(link), src=str(f), state="link").changed and link.is_symlink()
    assert not run_module(any_conn, "file", path=str(link), src=str(f), state="link").changed
    assert run_module(any_conn, "file", path=str(d), state="absent").changed and not d.exists()
    assert not run_module(any_conn, "file", path=str(d), state="absent").changed
    missing = run_module(any_conn, "file", path=str(tmp_path / "nope"), state="file")
    assert missing.failed and "does not exist" in missing.msg


def test_file_recurse(any_conn, tmp_path: Path) -> None:
    (tmp_path / "r" / "x").mkdir(parents=True)
    (tmp_path / "r" / "x" / "f").write_text("1")
    assert run_module(any_conn, "file", path=str(tmp_path / "r"), state="directory", mode="0755", recurse=True).changed
    assert mode(tmp_path / "r" / "x" / "f") == "0755"
    assert not run_module(any_conn, "file", path=str(tmp_path / "r"), state="directory", mode="0755", recurse=True).changed


def test_copy_content_and_src(any_conn, tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    result = run_module(any_conn, "copy", content="v1\n", dest=str(dest), mode="0640", diff=True)
    assert result.changed and dest.read_text() == "v1\n" and mode(dest) == "0640"
    assert result.diff[0].after == "v1\n"
    assert not run_module(any_conn, "copy", content="v1\n", dest=str(dest), mode="0640").changed
    checked = run_module(any_conn, "copy", content="v2\n", dest=str(dest), check=True, diff=True)
    assert checked.changed and checked.diff[0].before == "v1\n" and dest.read_text() == "v1\n"
    backup = run_module(any_conn, "copy", content="v2\n", dest=str(dest), backup=True)
    assert dest.read_text() == "v2\n" and Path(backup.data["backup_file"]).read_text() == "v1\n"
    assert mode(dest) == "0640"  # an existing file keeps its mode
    files = tmp_path / "files"
    files.mkdir()
    (files / "model.cfg").write_text("cfg")
    into = tmp_path / "into"
    into.mkdir()
    assert run_module(any_conn, "copy", src="model.cfg", dest=str(into) + "/", search_paths=[str(tmp_path)]).changed
    assert (into / "model.cfg").read_text() == "cfg"
    assert not run_module(any_conn, "copy", src="model.cfg", dest=str(into) + "/", search_paths=[str(tmp_path)]).changed
    invalid = run_module(any_conn, "copy", content="bad", dest=str(tmp_path / "v"), validate="grep -q good %s")
    assert invalid.failed and "validate" in invalid.msg and not (tmp_path / "v").exists()
    keep = run_module(any_conn, "copy", content="other", dest=str(dest), force=False)
    assert not keep.changed and dest.read_text() == "v2\n"


def test_template(any_conn, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "api.yaml.j2").write_text("port: {{ port }}\n{% for k in keys %}- {{ k }}\n{% endfor %}")
    dest = tmp_path / "api.yaml"
    variables = {"port": 6006, "keys": ["a", "b"]}
    result = run_module(any_conn, "template", src="api.yaml.j2", dest=str(dest), variables=variables, search_paths=[str(tmp_path)])
    assert result.changed and dest.read_text() == "port: 6006\n- a\n- b\n"
    assert not run_module(any_conn, "template", src="api.yaml.j2", dest=str(dest), variables=variables, search_paths=[str(tmp_path)]).changed
    missing = pytest.raises(Exception, run_module, any_conn, "template", src="nope.j2", dest=str(dest), search_paths=[str(tmp_path)])
    assert "could not find 'nope.j2'" in str(missing.value)


def test_lineinfile(any_conn, tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("A=1\nMODEL_PATH=/old\nB=2")
    result = run_module(any_conn, "lineinfile", path=str(path), regexp="^MODEL_PATH=", line="MODEL_PATH=/root/autodl-tmp/chatglm3-6b", diff=True)
    assert result.changed and path.read_text() == "A=1\nMODEL_PATH=/root/autodl-tmp/chatglm3-6b\nB=2"
    assert "-MODEL_PATH=/old" in "".join(result.diff[0].before.splitlines(True)) or result.diff[0].before.count("/old") == 1
    assert not run_module(any_conn, "lineinfile", path=str(path), regexp="^MODEL_PATH=", line="MODEL_PATH=/root/autodl-tmp/chatglm3-6b").changed
    assert run_module(any_conn, "lineinfile", path=str(path), line="C=3", insertafter="^A=").changed
    assert path.read_text().splitlines() == ["A=1", "C=3", "MODEL_PATH=/root/autodl-tmp/chatglm3-6b", "B=2"]
    assert run_module(any_conn, "lineinfile", path=str(path), line="FIRST", insertbefore="BOF").changed
    assert path.read_text().startswith("FIRST\n")
    assert run_module(any_conn, "lineinfile", path=str(path), regexp="^C=", state="absent").changed
    assert "C=3" not in path.read_text()
    assert run_module(any_conn, "lineinfile", path=str(tmp_path / "nofile"), line="x").failed
    assert run_module(any_conn, "lineinfile", path=str(tmp_path / "new"), line="x", create=True).changed
    assert (tmp_path / "new").read_text() == "x\n"


def test_stat_and_fetch(any_conn, tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"w" * 100)
    info = run_module(any_conn, "stat", path=str(f)).data["stat"]
    assert info["exists"] and info["isreg"] and info["size"] == 100 and info["mode"] == mode(f)
    assert info["checksum"] == __import__("hashlib").sha1(b"w" * 100).hexdigest()  # Ansible: SHA-1 by default
    assert run_module(any_conn, "stat", path=str(tmp_path / "none")).data["stat"] == {"exists": False}
    out = tmp_path / "fetched"
    result = run_module(any_conn, "fetch", src=str(f), dest=str(out))
    local = out / "target" / str(f).lstrip("/")
    assert result.changed and local.read_bytes() == b"w" * 100
    assert not run_module(any_conn, "fetch", src=str(f), dest=str(out)).changed
    assert run_module(any_conn, "fetch", src=str(tmp_path / "none"), dest=str(out)).failed
    # a src with .. may not climb out of dest/HOSTNAME on the controller (Ansible refuses it too: CVE-2019-3828)
    # (on the host, .. beyond / stays at /: the path names the file; on the controller it climbs 2 levels above dest/target)
    (tmp_path / "sub").mkdir()
    climbing = "/".join([str(tmp_path / "sub"), *[".."] * (len(tmp_path.parts) + 2), str(f.relative_to("/"))])
    escaped = run_module(any_conn, "fetch", src=climbing, dest=str(out))
    assert escaped.failed and "directory traversal" in escaped.msg, escaped.msg
    assert not (tmp_path / f.relative_to("/")).exists()


HOSTILE = "x\"; touch {s}/pwned #'$(touch {s}/pwned2)`touch {s}/pwned3`\nnext"


def test_hostile_values_land_literally(any_conn, tmp_path: Path) -> None:
    """Quotes, $(...), backticks and newlines in paths, content and lines run nothing on the target."""
    hostile = HOSTILE.format(s=tmp_path)
    odd_dir = tmp_path / "d $(id) `id` ';\""
    assert run_module(any_conn, "file", path=str(odd_dir), state="directory").changed and odd_dir.is_dir()
    dest = odd_dir / "f;touch x"
    assert run_module(any_conn, "copy", content=hostile, dest=str(dest)).changed
    assert dest.read_text() == hostile
    assert not run_module(any_conn, "copy", content=hostile, dest=str(dest)).changed
    line = "K=" + hostile.replace("\n", " ")
    assert run_module(any_conn, "lineinfile", path=str(dest), line=line).changed
    assert dest.read_text().splitlines()[-1] == line
    assert run_module(any_conn, "stat", path=str(dest)).data["stat"]["isreg"]
    assert run_module(any_conn, "file", path=str(dest), state="absent").changed and not dest.exists()
    assert not list(tmp_path.glob("pwned*")) and not (tmp_path / "x").exists()
