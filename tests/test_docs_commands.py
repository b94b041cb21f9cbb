"""Every `glmops` command in README*.md, docs/ (docs/zh/ too), bench/ and roles/ READMEs is checked
against the real CLI at test time, so the docs cannot drift (issue 18, item 5):

- a command line in a code block (fenced, or indented 4+ spaces; `$ ` prompts and `\\` continuations
  handled) is parsed by the real click commands as the shell would pass it: the subcommands exist,
  every option exists and takes its value, the arguments fit (nothing runs);
- a synopsis (`glmops run PLAYBOOK [-i INVENTORY]...`, a `## glmops chat [HOST] ...` heading) or an
  inline `glmops ...` span: its subcommands and every option it names exist;
- the files a command line names in this repository (playbooks/, inventory/, scripts/, ...) exist,
  and a `glmops run` playbook resolves as `glmops run` resolves it (a path, or a shipped name);
- the commands that run offline in a moment run for real: `--help`, `inventory add` (into a copy of
  the inventory it names) and `inventory list`, `init` (into a temporary folder).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from helpers import ROOT

from glmops.cli import cli

REPO_PATH = re.compile(r"^(playbooks|inventory|scripts|roles|templates|bench|docs)/[\w./-]*\w$")
OPTION = re.compile(r"^\[?(--?[A-Za-z][A-Za-z0-9-]*)")
PLACEHOLDER = re.compile(r"^\[?[A-Z][A-Z0-9_]*\]?\.*$")
SYNOPSIS_MARKS = ("[", "]", " | ", "...", "->", "…")
RUN_OFFLINE = {("inventory", "add"), ("inventory", "list"), ("init",)}


@dataclass
class Command:
    """One `glmops ...` line of the docs: where, the text, and whether it is a concrete command line."""

    where: str
    text: str
    concrete: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def doc_files() -> list[Path]:
    files = [*sorted(ROOT.glob("README*.md")), *sorted((ROOT / "docs").rglob("*.md")), *sorted(ROOT.glob("bench/*.md")),
             *sorted(ROOT.glob("roles/*.md"))]
    return [f for f in files if f.is_file()]


def _code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command text) of every line of a code block, continuations joined, prompt removed."""
    lines = text.splitlines()
    found: list[tuple[int, str]] = []
    fenced = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            index += 1
            continue
        indent = len(line) - len(line.lstrip(" "))
        if fenced or (indent >= 4 and line.strip()):
            start, body = index, line.strip()
            while body.endswith("\\") and index + 1 < len(lines):
                index += 1
                body = body[:-1].rstrip() + " " + lines[index].strip()
            found.append((start + 1, body[2:] if body.startswith("$ ") else body))
        index += 1
    return found


def doc_commands() -> list[Command]:
    commands: list[Command] = []
    for path in doc_files():
        rel = path.relative_to(ROOT)
        text = path.read_text(encoding="utf-8")
        code = _code_lines(text)
        code_numbers = {number for number, _ in code}
        for number, body in code:
            if body.startswith("glmops "):
                commands.append(Command(f"{rel}:{number}", body, concrete=not any(mark in body for mark in SYNOPSIS_MARKS)
                                        and not any(PLACEHOLDER.match(w) for w in body.split()[1:])))
        for number, line in enumerate(text.splitlines(), 1):
            if number in code_numbers:
                continue
            heading = re.match(r"^#+\s+(glmops\s.*)$", line)
            spans = [heading.group(1)] if heading else []
            spans += re.findall(r"`(glmops(?:\s[^`]*)?)`", line)
            commands += [Command(f"{rel}:{number}", span, concrete=False) for span in spans]
    return commands


def parse_concrete(words: list[str]) -> tuple[list[str], click.Context | None]:
    """Parse `glmops WORDS` with the real commands as `glmops` would, running nothing; (the command path,
    the last context). click's own errors (no such command or option, bad value) propagate."""
    cmd: click.Command = cli
    name, args, parent, path = "glmops", list(words), None, []
    while True:
        ctx = cmd.make_context(name, list(args), parent=parent)
        if not isinstance(cmd, click.Group):
            return path, ctx
        rest = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []), *ctx.args]
        if not rest:
            return path, ctx
        sub_name, sub, sub_args = cmd.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None
        cmd, name, args, parent = sub, sub_name, sub_args, ctx
        path.append(sub_name)


def _options_of(cmd: click.Command) -> set[str]:
    return {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)} | {"-h", "--help"}


def check_synopsis(text: str) -> list[str]:
    """The problems of a synopsis or inline span: unknown subcommands, unknown options."""
    words = text.replace("|", " ").split()[1:]
    cmd: click.Command = cli
    chain = [cli]
    names: list[str] = []
    index = 0
    while isinstance(cmd, click.Group) and index < len(words) and not words[index].startswith(("-", "[")):
        word = words[index]
        parts = word.split("/")
        ctx = click.Context(cmd, info_name=" ".join(["glmops", *names]))
        if len(parts) > 1 and all(cmd.get_command(ctx, p) for p in parts):
            return []  # `glmops status/logs/stop`: a list of subcommands
        sub = cmd.get_command(ctx, word)
        if sub is None:
            probe = click.Context(cmd, resilient_parsing=True)
            rest = cmd.parse_args(probe, [word])  # a group may take a default subcommand (`glmops tunnel HOST`)
            rewritten = [*(getattr(probe, "_protected_args", None) or []), *rest]
            sub = cmd.get_command(ctx, rewritten[0]) if rewritten and rewritten[0] != word else None
            if sub is None:
                if PLACEHOLDER.match(word) or not isinstance(cmd, click.Group) or cmd is not cli:
                    break
                return [f"no command `glmops {' '.join([*names, word])}`"]
            names.append(rewritten[0])
        else:
            names.append(word)
            index += 1
        cmd = sub
        chain.append(cmd)
    known = set().union(*(_options_of(c) for c in chain))
    problems = []
    for word in words[index:]:
        if word == "--":
            break
        match = OPTION.match(word)
        if match and match.group(1) not in known:
            problems.append(f"`glmops {' '.join(names)}` has no option {match.group(1)}")
    return problems


def _run_offline(path: list[str], words: list[str], tmp: Path) -> str | None:
    """Run an offline command for real (inventories it changes are copies); the problem, or None."""
    words = list(words)
    if path == ["inventory", "add"]:
        if "--copy-id" in words or "--password-prompt" in words:
            return None  # needs the host
        for flag in ("-i", "--inventory"):
            if flag in words:
                source = ROOT / words[words.index(flag) + 1]
                copy = tmp / f"inventory-{len(list(tmp.iterdir()))}.yml"
                if source.is_file():
                    shutil.copy(source, copy)
                words[words.index(flag) + 1] = str(copy)
                break
        else:
            words[words.index("add") + 1:words.index("add") + 1] = []  # keep NAME where it is
            words[words.index("add"):words.index("add") + 1] = ["add", "-i", str(tmp / "inventory.yml")]
    if path == ["inventory", "list"]:
        sources = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-i", "--inventory")]
        if not sources or not all((ROOT / source).is_file() for source in sources):
            return None  # the user's own inventory (the default, ~/...): parsed only
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "config"),
           "XDG_STATE_HOME": str(tmp / "state"), "COLUMNS": "200"}
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "glmops", *words], cwd=ROOT if path != ["init"] else work, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or "Traceback" in done.stderr:
        return f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-500:]}"
    return None


def check_concrete(command: Command, tmp: Path) -> list[str]:
    try:
        words = shlex.split(command.text, comments=True)
    except ValueError as exc:
        return [f"cannot split as a shell would: {exc}"]
    help_asked = any(w in ("-h", "--help", "--version") for w in words)
    try:
        path, ctx = parse_concrete(words[1:])
    except click.exceptions.Exit as exit_:
        return [] if exit_.exit_code == 0 and help_asked else [f"exits {exit_.exit_code} while parsing"]
    except click.ClickException as exc:
        return [exc.format_message()]
    problems = []
    if path == ["run"] and ctx is not None and ctx.params.get("playbook"):
        from glmops.shipped import resolve_playbook

        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            if not resolve_playbook(str(ctx.params["playbook"])).is_file():
                problems.append(f"playbook {ctx.params['playbook']} is neither a file here nor a shipped playbook")
        finally:
            os.chdir(cwd)
    if help_asked or tuple(path) in RUN_OFFLINE:
        problem = _run_offline(path, words[1:], tmp)
        if problem:
            problems.append(f"ran it: {problem}")
    return problems


COMMANDS = doc_commands()


def test_the_docs_have_commands() -> None:
    """The extraction finds the commands it must (a broken extractor would check nothing)."""
    where = {c.where.split(":")[0] for c in COMMANDS if c.concrete}
    assert {"README.md", "docs/deploy.md", "docs/tunnel.md", "docs/day2.md", "docs/inventory.md"} <= where, where
    assert sum(c.concrete for c in COMMANDS) >= 20 and sum(not c.concrete for c in COMMANDS) >= 20


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.concrete], ids=str)
def test_command_line_parses_with_the_real_cli(command: Command, tmp_path: Path) -> None:
    problems = check_concrete(command, tmp_path)
    assert not problems, f"{command}\n  " + "\n  ".join(problems)


def test_synopses_and_inline_commands_name_real_commands_and_options() -> None:
    problems = [f"{c}: {p}" for c in COMMANDS if not c.concrete for p in check_synopsis(c.text)]
    assert not problems, "\n".join(problems)


def test_files_named_in_code_blocks_exist() -> None:
    missing = []
    for path in doc_files():
        for number, body in _code_lines(path.read_text(encoding="utf-8")):
            try:
                words = shlex.split(body, comments=True)
            except ValueError:
                words = body.split()
            missing += [f"{path.relative_to(ROOT)}:{number}: {w}" for w in words if REPO_PATH.match(w) and not (ROOT / w).exists()]
    assert not missing, "\n".join(missing)


def test_the_checker_catches_drift(tmp_path: Path) -> None:
    """The checks fail on what drifted docs would say."""
    assert check_concrete(Command("x", "glmops tunnel open h --backgroud", True), tmp_path)
    assert check_concrete(Command("x", "glmops inventory ad h -- ssh h", True), tmp_path)
    assert check_concrete(Command("x", "glmops run playbooks/nonesuch.yml -i inventory/autodl.yml", True), tmp_path)
    assert check_concrete(Command("x", "glmops tunnel open h --local-port six", True), tmp_path)
    assert check_synopsis("glmops tunnel stop HOST | --everything")
    assert check_synopsis("glmops statuz HOST")
    assert not check_synopsis("glmops tunnel HOST [-i INVENTORY] [--local-port 6006]")
    assert not check_concrete(Command("x", "glmops tunnel autodl-3090 -i inventory/autodl.yml --background", True), tmp_path)


def test_the_one_test_command_is_the_readme_s() -> None:
    """README.md gives `bash scripts/test.sh` as the command that runs the tests, and CI runs exactly it."""
    readme = [body for _, body in _code_lines((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert any(shlex.split(body, comments=True) == ["bash", "scripts/test.sh"] for body in readme), readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "bootstrap.sh --tests" in (ROOT / "scripts" / "test.sh").read_text()
