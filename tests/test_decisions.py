"""Pure decision logic of the modules, one behaviour per case (the real effects of each module are
tested over real sshd in test_modules_*.py)."""

from __future__ import annotations

from typing import Any

import pytest

from glmops.connection.base import CommandResult
from glmops.executor.facts import needs_facts
from glmops.modules._files import attr_changes
from glmops.modules._remote import PathState, normalize_mode, parse_probe
from glmops.modules.lineinfile import LineinfileModule
from glmops.playbook.model import Task
from glmops.playbook.templating import Templar

LINES = ["a=1\n", "# comment\n", "b=2\n", "a=3\n"]


def _args(**args: Any) -> dict[str, Any]:
    return {"state": "present", "insertafter": None, "insertbefore": None, "firstmatch": False, "regexp": None,
            "search_string": None, "line": None, **args}


@pytest.mark.parametrize(
    "lines,args,expected,message",
    [
        (LINES, _args(line="a=9", regexp="^a="), ["a=1\n", "# comment\n", "b=2\n", "a=9\n"], "line replaced"),  # last match
        (LINES, _args(line="a=3", regexp="^a="), LINES, ""),  # already the line
        (LINES, _args(line="b=2"), LINES, ""),  # present without regexp
        (LINES, _args(line="c=1"), LINES + ["c=1\n"], "line added"),  # appended at EOF
        (["x"], _args(line="c=1"), ["x\n", "c=1\n"], "line added"),  # a last line without newline gets one
        ([], _args(line="c=1"), ["c=1\n"], "line added"),  # empty file
        (LINES, _args(line="c=1", insertbefore="BOF"), ["c=1\n"] + LINES, "line added"),
        (LINES, _args(line="c=1", insertafter="^a="), LINES + ["c=1\n"], "line added"),  # after the last match
        (LINES, _args(line="c=1", insertafter="^a=", firstmatch=True), ["a=1\n", "c=1\n"] + LINES[1:], "line added"),
        (LINES, _args(line="c=1", insertbefore="^b="), ["a=1\n", "# comment\n", "c=1\n", "b=2\n", "a=3\n"], "line added"),
        (LINES, _args(line="c=1", insertafter="^nothing"), LINES + ["c=1\n"], "line added"),  # no anchor match: EOF
        (LINES, _args(line="B=2", search_string="b="), ["a=1\n", "# comment\n", "B=2\n", "a=3\n"], "line replaced"),
    ],
)
def test_lineinfile_present(lines: list[str], args: dict[str, Any], expected: list[str], message: str) -> None:
    assert LineinfileModule()._present(list(lines), args) == (expected, message)


@pytest.mark.parametrize(
    "args,expected,message",
    [
        (_args(state="absent", regexp="^a="), ["# comment\n", "b=2\n"], "2 line(s) removed"),
        (_args(state="absent", line="b=2"), ["a=1\n", "# comment\n", "a=3\n"], "1 line(s) removed"),
        (_args(state="absent", search_string="comm"), ["a=1\n", "b=2\n", "a=3\n"], "1 line(s) removed"),
        (_args(state="absent", regexp="^z="), LINES, ""),
    ],
)
def test_lineinfile_absent(args: dict[str, Any], expected: list[str], message: str) -> None:
    assert LineinfileModule()._absent(list(LINES), args) == (expected, message)


@pytest.mark.parametrize(
    "stdout,state,content",
    [
        ("type=absent\n", PathState("absent"), None),
        ("type=file\nstat=644 0 0 root root 12 1700000000\nsha256=ab\n",
         PathState("file", "0644", 0, 0, "root", "root", 12, 1700000000, "", "ab"), None),
        ("type=directory\nstat=1777 0 0 root root 4096 1\n", PathState("directory", "1777", 0, 0, "root", "root", 4096, 1), None),
        ("type=link\nstat=777 1000 1000 me me 3 5\ntarget=a=b\n", PathState("link", "0777", 1000, 1000, "me", "me", 3, 5, "a=b"), None),
        ("type=file\nstat=600 0 0 root root 2 1\ncontent=aGk=\n", PathState("file", "0600", 0, 0, "root", "root", 2, 1), b"hi"),
        ("type=file\nstat=600 0 0 root root 0 1\ncontent=\n", PathState("file", "0600", 0, 0, "root", "root", 0, 1), b""),
        ("type=file\nstat=\n", PathState("file"), None),  # stat printed nothing
    ],
)
def test_parse_probe(stdout: str, state: PathState, content: bytes | None) -> None:
    assert parse_probe(CommandResult(0, stdout, "")) == (state, content)


@pytest.mark.parametrize(
    "mode,expected",
    [(None, None), ("", None), ("0644", "0644"), ("644", "0644"), (0o644, "0644"), (420, "0644"), ("u+rwx,g-w", "u+rwx,g-w"),
     ("4755", "4755"), ("0888", ValueError), (0o10000, ValueError), (True, ValueError)],
)
def test_normalize_mode(mode: Any, expected: Any) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError):
            normalize_mode(mode)
    else:
        assert normalize_mode(mode) == expected


STATE = PathState("file", "0644", 0, 0, "root", "root")


@pytest.mark.parametrize(
    "args,expected",
    [
        ({}, {}),
        ({"mode": "0644", "owner": "root", "group": "root"}, {}),
        ({"owner": "0", "group": "0"}, {}),  # numeric ids match too
        ({"mode": "0600"}, {"mode": "0600"}),
        ({"mode": "u+x"}, {"mode": "u+x"}),  # symbolic: decided on the host (symbolic_mode_changed)
        ({"owner": "nobody", "group": "nogroup"}, {"owner": "nobody", "group": "nogroup"}),
    ],
)
def test_attr_changes(args: dict[str, Any], expected: dict[str, str]) -> None:
    assert attr_changes(STATE, args) == expected


def _task(**fields: Any) -> Task:
    return Task(module=fields.pop("module", "debug"), **fields)


@pytest.mark.parametrize(
    "task,when,variables,expected",
    [
        (_task(args={"msg": "{{ ansible_hostname }}"}), [], {}, True),  # a fact in the arguments
        (_task(args={"msg": "{{ ansible_hostname }}"}), [], {"ansible_hostname": "set"}, False),  # defined already
        (_task(args={"msg": "{{ other }}"}), [], {}, False),  # no ansible_* name
        (_task(args={"msg": "ansible_hostname"}), [], {}, False),  # plain text, not a template
        (_task(args={"msg": "hi"}, when=["ansible_os_family == 'Debian'"]), [], {}, True),  # the task's when
        (_task(args={"msg": "hi"}), ["ansible_distribution is defined"], {}, True),  # the scope's when
        (_task(args={"msg": "{{ derived }}"}), [], {"derived": "{{ ansible_nodename }}"}, True),  # through a variable
        (_task(args={"msg": "hi"}, changed_when=["ansible_memtotal_mb > 1"]), [], {}, True),
    ],
)
def test_needs_facts(task: Task, when: list[Any], variables: dict[str, Any], expected: bool) -> None:
    assert needs_facts(Templar(), task, when, [], [], variables) is expected
