"""Modules as data: args + the host's state (facts) in, the planned Changes out (docs/architecture.md, the module contract).

The facts are real: read through a LocalConnection from files, git repositories and folders these
tests make in tmp_path; no sshd. Each plan is fed by hand (`send` a Done), so nothing planned runs
unless a test says so. Then the driver (`Module.run`): check mode changes nothing, by construction.
Each module keeps its real-sshd test in the test_modules_*.py files.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

import pytest

from glmops.connection.local import LocalConnection
from glmops.modules import get_module
from glmops.modules.base import NOT_RUN, Change, Done, ModuleContext, ModuleResult, drive, validate_args
from glmops.playbook.templating import Templar

MODULES_DIR = Path(__file__).resolve().parent.parent / "glmops" / "modules"


def context(check: bool = False, diff: bool = False) -> ModuleContext:
    return ModuleContext(conn=LocalConnection(), host="localhost", check=check, diff=diff, templar=Templar())


def start(module_name: str, ctx: ModuleContext, /, **args: Any) -> tuple[Any, Any]:
    """The module's plan and its first yielded Change (or the ModuleResult when it plans nothing)."""
    module = get_module(module_name)
    validated = validate_args(module, args, final=True)
    module.check_args(validated)
    plan = module.plan(ctx, validated)
    if isinstance(plan, ModuleResult):
        return plan, plan
    try:
        return plan, next(plan)
    except StopIteration as stop:
        return plan, stop.value


def finish(plan: Any, done: Done) -> tuple[list[Change], ModuleResult]:
    """Send `done` back for every further change; the further changes and the plan's result."""
    more = []
    try:
        while True:
            more.append(plan.send(done))
    except StopIteration as stop:
        return more, stop.value


def test_file_directory_missing_plans_mkdir_with_a_state_diff(tmp_path: Path) -> None:
    target = tmp_path / "new dir"
    plan, change = start("file", context(), path=str(target), state="directory")
    assert isinstance(change, Change)
    assert change.command == f"mkdir -p -- '{target}'"
    assert (change.diffs()[0].before, change.diffs()[0].after) == ("state: absent\n", "state: directory\n")
    more, result = finish(plan, NOT_RUN)  # not run: nothing read back, nothing more planned
    assert more == [] and result.data == {"path": str(target), "state": "directory"}
    assert not target.exists()


def test_file_present_with_right_mode_plans_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o640)
    _, result = start("file", context(), path=str(path), mode="0640")
    assert isinstance(result, ModuleResult) and result.data["mode"] == "0640"


def test_file_mode_change_is_one_chmod(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o600)
    plan, change = start("file", context(), path=str(path), mode="0644")
    assert change.command == f"chmod -- 0644 {path}"
    assert change.diffs()[0].before == "mode: 0600\n" and change.diffs()[0].after == "mode: 0644\n"
    assert finish(plan, Done(ran=True))[0] == []


def test_copy_content_plans_one_upload_with_the_text_diff(tmp_path: Path) -> None:
    dest = tmp_path / "conf"
    dest.write_text("old\n")
    ctx = context(diff=True)
    plan, change = start("copy", ctx, content="new\n", dest=str(dest))
    assert change.upload == (b"new\n", str(dest)) and change.command is None
    assert [(d.before, d.after) for d in change.diffs()] == [("old\n", "new\n")]
    more, result = finish(plan, NOT_RUN)
    assert more == [] and result.data["dest"] == str(dest)
    assert dest.read_text() == "old\n"


def test_copy_same_content_plans_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "conf"
    dest.write_text("same\n")
    plan, result = start("copy", context(), content="same\n", dest=str(dest))
    assert isinstance(result, ModuleResult) and not result.failed


def test_lineinfile_plans_the_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("A=1\nB=2\n")
    plan, change = start("lineinfile", context(), path=str(path), regexp="^B=", line="B=3")
    assert change.upload == (b"A=1\nB=3\n", str(path))
    _, result = finish(plan, NOT_RUN)
    assert result.msg == "line replaced"


def test_pip_missing_virtualenv_plans_its_creation_first(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    plan, change = start("pip", context(), name=["six"], virtualenv=str(venv))
    assert change.command is not None and change.command.endswith(f" {venv}") and "venv" in change.command
    more, result = finish(plan, NOT_RUN)  # check mode: no venv to list packages in, so no pip run planned
    assert more == [] and result.data == {"packages": ["six"], "virtualenv_created": True}


def _git(*argv: str, cwd: Path) -> str:
    return subprocess.run(["git", *argv], cwd=cwd, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(cwd)}).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    repo = tmp_path / "upstream"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    (repo / "a").write_text("1")
    _git("add", "a", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    return repo


def test_git_clone_and_update_both_plan_a_change_with_a_diff(tmp_path: Path, upstream: Path) -> None:
    dest = tmp_path / "checkout"
    plan, clone = start("git", context(), repo=str(upstream), dest=str(dest), version="main")
    assert "git clone" in clone.command and clone.diffs()[0].after == f"cloned {upstream} @ main\n"
    assert finish(plan, NOT_RUN)[1].data["after"] == _git("rev-parse", "HEAD", cwd=upstream)
    _git("clone", "-q", str(upstream), str(dest), cwd=tmp_path)
    before = _git("rev-parse", "HEAD", cwd=dest)
    (upstream / "a").write_text("2")
    _git("commit", "-q", "-am", "two", cwd=upstream)
    after = _git("rev-parse", "HEAD", cwd=upstream)
    plan, update = start("git", context(), repo=str(upstream), dest=str(dest), version="main")
    assert update.call is not None  # the fetch + checkout, with the commit it moves from and to
    assert (update.diffs()[0].before, update.diffs()[0].after) == (before + "\n", after + "\n")
    assert finish(plan, NOT_RUN)[1].data == {"before": before, "after": after}
    assert _git("rev-parse", "HEAD", cwd=dest) == before


def test_git_check_mode_shows_a_diff_on_both_paths(tmp_path: Path, upstream: Path) -> None:
    """The inconsistency of issue 21: check mode gave a diff for a clone but none for an update."""
    module = get_module("git")
    dest = tmp_path / "checkout"
    args = validate_args(module, {"repo": str(upstream), "dest": str(dest), "version": "main"}, final=True)
    cloned = module.run(context(check=True, diff=True), args)
    assert cloned.changed and len(cloned.diff) == 1 and not dest.exists()
    _git("clone", "-q", str(upstream), str(dest), cwd=tmp_path)
    (upstream / "a").write_text("2")
    _git("commit", "-q", "-am", "two", cwd=upstream)
    updated = module.run(context(check=True, diff=True), args)
    assert updated.changed and len(updated.diff) == 1
    assert updated.diff[0].after == _git("rev-parse", "HEAD", cwd=upstream) + "\n"
    assert _git("rev-parse", "HEAD", cwd=dest) != _git("rev-parse", "HEAD", cwd=upstream)


def test_get_url_check_mode_result_has_the_fields_of_a_real_run(tmp_path: Path) -> None:
    """The other inconsistency of issue 21: get_url's check-mode result lacked checksum_dest and size."""
    dest = tmp_path / "model.bin"
    sha = "a" * 64
    plan, download = start("get_url", context(), url="http://127.0.0.1:9/model.bin", dest=str(dest), checksum=f"sha256:{sha}")
    assert download.may_fail and "curl" in download.command and download.timeout == 24 * 3600
    checked = finish(plan, NOT_RUN)[1]
    plan, _ = start("get_url", context(), url="http://127.0.0.1:9/model.bin", dest=str(dest), checksum=f"sha256:{sha}")
    dest.write_bytes(b"x")  # what the download would have left, so the attribute read after it finds a file
    ran = finish(plan, Done(ran=True, stdout=f"size=1\nsha256={sha}\n"))[1]
    assert set(checked.data) == set(ran.data) == {"dest", "url", "checksum_dest", "size"}
    assert checked.data["checksum_dest"] == ran.data["checksum_dest"] == sha


def test_daemon_not_running_plans_one_start(tmp_path: Path) -> None:
    plan, start_change = start("daemon", context(), command="sleep 30", pid_file=str(tmp_path / "d.pid"),
                               log_file=str(tmp_path / "d.log"))
    assert start_change.call is not None and start_change.may_fail and start_change.reason == "start sleep"
    more, result = finish(plan, NOT_RUN)
    assert more == [] and result.msg == "sleep would be started (was not running)" and result.data["running"] is False
    assert not (tmp_path / "d.pid").exists()


def test_driver_check_mode_changes_nothing_and_marks_changed(tmp_path: Path) -> None:
    target = tmp_path / "d"
    module = get_module("file")
    args = validate_args(module, {"path": str(target), "state": "directory", "mode": "0700"}, final=True)
    checked = module.run(context(check=True, diff=True), args)
    assert checked.changed and not checked.failed and not target.exists()
    assert [(d.before, d.after) for d in checked.diff] == [("state: absent\n", "state: directory\n")]
    ran = module.run(context(diff=True), args)
    assert ran.changed and target.is_dir() and oct(target.stat().st_mode & 0o777) == "0o700"
    assert [(d.before, d.after) for d in ran.diff] == [(d.before, d.after) for d in checked.diff]
    assert not module.run(context(), args).changed


def test_driver_failing_change_fails_the_module_with_its_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    module = get_module("file")
    args = validate_args(module, {"path": str(blocker / "sub"), "state": "directory"}, final=True)
    result = module.run(context(), args)
    assert result.failed and not result.changed and "Not a directory" in result.msg


def _mentions(path: Path) -> list[str]:
    """`ctx.check` or `ctx.change(...)` in a module file, by line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ctx" and node.attr in ("check", "change"):
            found.append(f"{path.name}:{node.lineno}: ctx.{node.attr}")
    return found


def test_no_module_tests_check_mode_or_marks_changed_by_hand() -> None:
    """Check mode and `changed` are the driver's (base.py); every module only yields its changes."""
    files = sorted(p for p in MODULES_DIR.glob("*.py") if p.name != "base.py")
    assert len(files) > 30
    offenders = [hit for path in files for hit in _mentions(path)]
    assert offenders == []
    assert not any("ctx.change(" in p.read_text() for p in files)


def test_driver_a_call_that_found_nothing_to_do_is_neither_changed_nor_failed(tmp_path: Path) -> None:
    """A `call` that returns Done(changed=False) (git's fetch that left HEAD where it was) leaves the task ok."""
    def plan(ctx: ModuleContext, args: dict[str, Any]) -> Any:
        done = yield Change(call=lambda ctx: Done(ran=True, changed=False), reason="nothing to do after all")
        return ModuleResult(msg=f"ran={done.ran}")

    quiet = drive(context(), plan(context(), {}))
    assert (quiet.changed, quiet.failed, quiet.msg) == (False, False, "ran=True")
    checked = drive(context(check=True), plan(context(), {}))
    assert (checked.changed, checked.msg) == (True, "ran=False")
