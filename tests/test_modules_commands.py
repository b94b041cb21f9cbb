"""command, shell, raw, setup and the controller-side modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from modhelp import run_module

from glmops.errors import ArgumentError


def test_command_does_not_use_a_shell(conn, tmp_path: Path) -> None:
    result = run_module(conn, "command", cmd=f"echo $(touch {tmp_path}/x) 'a  b'")
    assert result.changed and result.data["stdout"] == f"$(touch {tmp_path}/x) a  b"
    assert not (tmp_path / "x").exists()
    # as Ansible: $VAR expanded in each word (expand_argument_vars), an unset one left as written
    home = run_module(conn, "command", argv=["sh", "-c", "echo $HOME"]).data["stdout"]
    assert run_module(conn, "command", argv=["printf", "%s|", "a b", "$HOME", "$GLMOPS_UNSET_X", "$(id)"]).data["stdout"] == \
        f"a b|{home}|$GLMOPS_UNSET_X|$(id)|"
    assert run_module(conn, "command", argv=["printf", "%s|", "a b", "$HOME"],
                      expand_argument_vars=False).data["stdout"] == "a b|$HOME|"
    failed = run_module(conn, "command", cmd="ls /nonexistent-dir")
    assert failed.failed and failed.data["rc"] != 0 and "nonexistent" in failed.data["stderr"]


def test_creates_removes_chdir_stdin(conn, tmp_path: Path) -> None:
    marker = tmp_path / "done"
    assert run_module(conn, "shell", cmd=f"echo hi > {marker}", creates=str(marker)).changed
    skipped = run_module(conn, "shell", cmd=f"echo again >> {marker}", creates=str(tmp_path / "d*"))
    assert not skipped.changed and "exists" in skipped.msg and marker.read_text() == "hi\n"
    assert not run_module(conn, "command", cmd="rm x", removes=str(tmp_path / "missing")).changed
    assert run_module(conn, "shell", cmd="pwd", chdir=str(tmp_path)).data["stdout"] == str(tmp_path)
    assert run_module(conn, "shell", cmd="cat", stdin="fed").data["stdout"] == "fed"
    assert run_module(conn, "shell", cmd="echo $0", executable="/bin/bash").data["stdout"] == "/bin/bash"
    assert run_module(conn, "raw", cmd="echo raw | tr a-z A-Z").data["stdout"] == "RAW"


def test_check_mode_does_not_run_commands(conn, tmp_path: Path) -> None:
    result = run_module(conn, "command", cmd=f"touch {tmp_path}/x", check=True)
    assert result.skipped and not (tmp_path / "x").exists()
    decided = run_module(conn, "command", cmd=f"touch {tmp_path}/x", creates=str(tmp_path / "x"), check=True)
    assert decided.changed and not (tmp_path / "x").exists()


def test_argument_checks() -> None:
    with pytest.raises(ArgumentError, match="exactly one"):
        run_module(None, "command")
    with pytest.raises(ArgumentError, match="exactly one of 'src' and 'content'"):
        run_module(None, "copy", dest="/tmp/x")


def test_setup_facts(conn) -> None:
    facts = run_module(conn, "setup").facts
    assert facts["ansible_os_family"] == "Debian" and facts["ansible_processor_vcpus"] >= 1
    assert facts["ansible_memtotal_mb"] > 100 and any(m["mount"] == "/" for m in facts["ansible_mounts"])
    assert facts["ansible_python"]["version"].startswith("3.") and facts["ansible_facts"]["gpus"] == []
    assert facts["ansible_user_id"] == "root"


def test_setup_parses_gpus() -> None:
    from glmops.modules.setup import parse_facts

    text = "@@gpus\n0, NVIDIA GeForce RTX 3090, 24576, 1024, 535.54.03\n1, NVIDIA GeForce RTX 3090, 24576, 0, 535.54.03\n@@end\n"
    gpus = parse_facts(text)["gpus"]
    assert [g["memory_total_mb"] for g in gpus] == [24576, 24576] and gpus[0]["name"] == "NVIDIA GeForce RTX 3090"


def test_controller_modules() -> None:
    assert run_module(None, "debug", msg="hello").msg == "hello"
    assert run_module(None, "debug", var="x.y", variables={"x": {"y": 3}}).data["x.y"] == 3
    assert run_module(None, "set_fact", model_dir="/root/autodl-tmp").facts == {"model_dir": "/root/autodl-tmp"}
    assert not run_module(None, "assert", that=["a > 1", "b"], variables={"a": 2, "b": True}).failed
    failed = run_module(None, "assert", that=["a > 5"], fail_msg="too small", variables={"a": 2})
    assert failed.failed and failed.msg == "too small"
    assert run_module(None, "fail", msg="stop").failed
    with pytest.raises(ArgumentError, match="not a valid variable name"):
        run_module(None, "set_fact", **{"1bad": 1})
