"""The module contract.

A module is one file `glmops/modules/NAME.py` that defines `MODULE = SomeModule` (a subclass of
`Module`). Adding a module is that one file: the registry finds it by name.

Contract:
- `args` is the argument schema (like Ansible's argument_spec). Arguments are validated at load
  time (before anything runs) as far as they are literal, and again after templating.
- `plan(ctx, args)` is a generator. It reads the current state (facts: `ctx.run(cmd)`, ideally ONE
  remote command; reads run in check mode too), decides, and yields each change that must happen
  as a `Change`: a `command` (sh, with stdin/cwd), an `upload` (bytes to a path) or a `call` (a
  function of the context, for a write that is more than one command), each with an optional
  `diff`. It never writes to the host itself. `done = yield Change(...)` gets the `Done` back: rc,
  stdout, stderr, a call's `value`, and `ran` (False in check mode, where nothing runs). It returns
  the ModuleResult: msg, data that `register` stores, `failed`; not `changed`.
- The framework (`drive`, which `Module.run` calls) owns check mode, diffs and `changed`: it makes
  each change, or in check mode only records it; it keeps the diffs (with --diff); the result is
  changed when a change was yielded and succeeded. A failing change fails the module (its
  `failure` text and stderr as message; the module returns on `not done.ok`), unless the Change
  says `may_fail=True` and the module judges the Done itself. No module tests `ctx.check`.
- A module that changes nothing on the host (debug, stat, setup) returns a ModuleResult from `plan`
  (or overrides `run`).
- So a module's behaviour is data: args + facts in, planned Changes out. tests/test_module_plans.py
  feeds plans by hand, without a host.
- Everything interpolated into a remote command is quoted with `shlex.quote`.
- An argument whose value a remote program gets as a word of its own is a `path` or is marked
  `word=True`: a value starting with '-' is then refused before the module runs (`refuse_option`).
- Owner/group/mode go through the one shared step `yield from _files.set_attrs(...)` (file, copy,
  template, get_url, lineinfile).
- Output of a long command can be followed line by line: `Change(command=..., on_line=callback)`,
  or `ctx.run(cmd, on_line=callback)` for a read.
- Long work reports progress with `ctx.progress(done, total, msg)`: the console draws a live bar per
  host, `--json` gets `progress` events (redacted like every event). Call it as often as convenient;
  it is throttled here.

Example of a module that yields::

    class Stamp(Module):
        name = "stamp"
        args = {"path": Arg("path", required=True), "text": Arg("str", default="done")}

        def plan(self, ctx, args):
            path, text = args["path"], args["text"]
            now = ctx.run(f"cat -- {shlex.quote(path)} 2>/dev/null")       # a fact: runs in check mode too
            if now.rc == 0 and now.stdout == text + "\n":
                return ModuleResult(msg="already stamped", data={"path": path})  # nothing yielded: not changed
            done = yield Change(upload=((text + "\n").encode(), path), diff=Diff(now.stdout, text + "\n"),
                                failure=f"cannot write {path}")
            if not done.ok:
                return ModuleResult(data={"path": path})                   # the framework fails it, with stderr
            return ModuleResult(msg="stamped" if done.ran else "would stamp", data={"path": path})

The same with progress, one command whose output lines drive the bar (the wait is a read: it
runs in check mode as well)::

        def plan(self, ctx, args):
            n = args["seconds"]
            tick = lambda stream, line: stream == "stdout" and ctx.progress(int(line), n, "waiting", unit="s")
            ctx.run(f"i=0; while [ $i -lt {n} ]; do sleep 1; i=$((i+1)); echo $i; done", on_line=tick)
            yield Change(command=f"touch -- {shlex.quote(args['stamp'])}", diff=Diff("", "waited\n"))
            return ModuleResult()
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from glmops.connection.base import Become, CommandResult, Connection, LineCallback
from glmops.errors import ArgumentError, Pos
from glmops.values import NotABoolean, is_template, to_bool

if TYPE_CHECKING:  # pragma: no cover
    from glmops.playbook.templating import Templar

ARG_TYPES = ("str", "int", "float", "bool", "list", "dict", "path", "raw")


@dataclass(frozen=True)
class Arg:
    """One module argument."""

    type: str = "str"
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    aliases: tuple[str, ...] = ()
    elements: str | None = None  # element type of a list
    no_log: bool = False  # the value is secret: redacted in every output
    help: str = ""
    # The value reaches a remote program as a word of its own (a URL, a package, a git ref): one that
    # starts with '-' is refused, as a program would read it as an option. Paths always are.
    word: bool = False


@dataclass
class Diff:
    """What a change does to one file or object, shown with --diff."""

    before: str
    after: str
    before_header: str = "before"
    after_header: str = "after"


@dataclass
class ModuleResult:
    changed: bool = False
    failed: bool = False
    skipped: bool = False
    msg: str = ""
    diff: list[Diff] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # module return values, stored by `register`
    facts: dict[str, Any] = field(default_factory=dict)  # host variables to set (set_fact, setup)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The value `register` stores, shaped as Ansible's: changed, failed, msg, module data, diff, warnings."""
        out: dict[str, Any] = {"changed": self.changed, "failed": self.failed}
        if self.skipped:
            out["skipped"] = True
        if self.msg:
            out["msg"] = self.msg
        out.update(self.data)
        if self.diff:
            out["diff"] = [vars(d) for d in self.diff]
        if self.warnings:
            out["warnings"] = self.warnings
        return out


@dataclass
class AsyncCommand:
    """What an async task runs detached on the host, and how its result is shown."""

    script: str  # one sh command line
    stdin: bytes | None = None
    chdir: str | None = None
    shown: Any = None  # the `cmd` value of the result
    guarded: bool = False  # creates/removes decided that it runs (check mode: changed, not skipped)


@dataclass
class ModuleContext:
    """What a module sees while it runs on one host."""

    conn: Connection
    host: str
    check: bool = False
    diff: bool = False
    become: Become | None = None
    environment: dict[str, str] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)  # all variables of this host and task
    templar: "Templar | None" = None
    search_paths: list[str] = field(default_factory=list)  # dirs searched for `src` (role dirs, playbook dir)
    pos: Pos | None = None  # where the task is written, for error messages
    facts: Mapping[str, Any] = field(default_factory=dict)  # gathered facts, when gather_facts ran
    report: Callable[[dict[str, Any]], None] | None = None  # where progress goes (the runner's events)
    _last_report: float = field(default=0.0, repr=False)

    PROGRESS_INTERVAL: ClassVar[float] = 0.2  # seconds between two progress events of one task

    def progress(self, done: float, total: float | None = None, msg: str = "", *, unit: str = "B") -> None:
        """Report how far long work is: `done` of `total` (None when unknown) in `unit` ("B" for bytes).

        Throttled to one event per PROGRESS_INTERVAL; the final one (done == total) always goes out.
        """
        if self.report is None:
            return
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and now - self._last_report < self.PROGRESS_INTERVAL:
            return
        self._last_report = now
        self.report({"done": done, "total": total, "msg": msg, "unit": unit})

    def run(self, cmd: str, *, stdin: bytes | None = None, cwd: str | None = None, timeout: float | None = None,
            on_line: LineCallback | None = None) -> CommandResult:
        """Run a sh command on the host with the task's become and environment.

        `on_line(stream, line)` gets each output line ("stdout" or "stderr") while the command runs.
        """
        return self.conn.run(cmd, stdin=stdin, env=self.environment or None, cwd=cwd, become=self.become, timeout=timeout,
                             on_line=on_line)

    def find_file(self, kind: str, name: str) -> str:
        """Find a controller-side file: `kind` is 'files' or 'templates'. Absolute paths are taken as they are.

        Searched: each search path's `kind/` folder, then the search path itself (as Ansible does).
        """
        import os

        if os.path.isabs(name):
            if os.path.exists(name):
                return name
            raise ArgumentError(f"file not found: {name}", pos=self.pos, field="src")
        tried = []
        for base in self.search_paths:
            for candidate in (os.path.join(base, kind, name), os.path.join(base, name)):
                tried.append(candidate)
                if os.path.exists(candidate):
                    return candidate
        raise ArgumentError(
            f"could not find '{name}'",
            pos=self.pos,
            field="src",
            hint="looked in: " + ", ".join(tried) if tried else None,
        )


class Module:
    """Base class of modules. Subclasses set `name`, `args` and implement `plan` (`run` drives it)."""

    name: ClassVar[str]
    args: ClassVar[dict[str, Arg]] = {}
    free_form: ClassVar[str | None] = None  # the arg that takes `module: free text` (command, shell, raw)
    on_controller: ClassVar[bool] = False  # needs no connection (debug, set_fact, assert, fail)
    any_args: ClassVar[bool] = False  # accepts arbitrary argument names (set_fact)
    doc: ClassVar[str] = ""
    supports_async: ClassVar[bool] = False  # the task keywords async/poll are allowed (see async_command)
    # Its result and facts are the playbook's own values (set_fact, include_vars of controller files), so
    # they may hold templates. Every other module's result is host data: marked unsafe (values.to_unsafe).
    result_is_code: ClassVar[bool] = False

    def async_command(self, ctx: ModuleContext, args: dict[str, Any]) -> "AsyncCommand | ModuleResult":
        """For an `async:` task: the sh command to run detached, or a final result when nothing must run."""
        raise NotImplementedError(f"module {self.name} does not support async")

    def check_args(self, args: dict[str, Any]) -> None:
        """Cross-argument checks after templating (mutually exclusive args...). Raise ArgumentError."""

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        """Run the module: its plan, driven by the framework (check mode, diffs, `changed`)."""
        return drive(ctx, self.plan(ctx, args))

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> "ModuleResult | Plan":  # pragma: no cover
        """Read the host's state (facts) and yield the Changes to make; return the result's data.

        A module that changes nothing on the host may return a ModuleResult directly.
        """
        raise NotImplementedError


@dataclass
class Change:
    """One thing a module wants done on the host; the framework makes it, or in check mode only records it.

    Exactly one of `command` (a sh command line, with `stdin`/`cwd`), `upload` (bytes put at a path,
    written atomically, with an optional numeric `mode`) or `call` (a function of the context for a
    write that is more than one command; its return value comes back as `Done.value`).
    A failing change fails the module (message: `failure` and the command's stderr) and the module
    returns on `not done.ok`; `may_fail=True`: the module judges the Done itself.
    `check_result` set: what check mode gives instead (command, tempfile: skipped, as Ansible), unchanged.
    """

    command: str | None = None
    stdin: bytes | None = None
    cwd: str | None = None
    timeout: float | None = None
    upload: tuple[bytes, str] | None = None
    mode: int | None = None
    call: Callable[["ModuleContext"], Any] | None = None
    diff: "Diff | list[Diff] | None" = None
    failure: str | None = None
    may_fail: bool = False
    reason: str = ""
    check_result: "ModuleResult | None" = None
    on_line: LineCallback | None = None

    def diffs(self) -> list[Diff]:
        return [] if self.diff is None else self.diff if isinstance(self.diff, list) else [self.diff]


@dataclass
class Done:
    """What a yielded Change did, sent back into the module: `ran` is False in check mode (rc 0 then).

    `changed=False`: it ran and succeeded but found nothing to do (a `call` says so by returning a Done).
    """

    ran: bool
    rc: int = 0
    stdout: str = ""
    stderr: str = ""
    value: Any = None
    changed: bool = True

    @property
    def ok(self) -> bool:
        return self.rc == 0


NOT_RUN = Done(ran=False)
Plan = Generator[Change, Done, "ModuleResult | None"]


def make(ctx: ModuleContext, change: Change) -> Done:
    """Make one change on the host (never called in check mode)."""
    if change.call is not None:
        value = change.call(ctx)  # a Done of its own says whether the call did what it was for
        return value if isinstance(value, Done) else Done(ran=True, value=value)
    if change.upload is not None:
        content, dest = change.upload
        try:
            ctx.conn.put_bytes(content, dest, mode=change.mode, become=ctx.become)
        except OSError as exc:
            return Done(ran=True, rc=1, stderr=str(exc))
        return Done(ran=True)
    assert change.command is not None, "a Change needs a command, an upload or a call"
    done = ctx.run(change.command, stdin=change.stdin, cwd=change.cwd, timeout=change.timeout, on_line=change.on_line)
    return Done(ran=True, rc=done.rc, stdout=done.stdout, stderr=done.stderr)


def failure_message(change: Change, done: Done) -> str:
    """The message of a failed change: its `failure` and the command's complaint."""
    reason = done.stderr.strip() or done.stdout.strip()
    failure = change.failure
    return f"{failure}: {reason}" if failure and reason else failure or reason or f"failed (exit {done.rc}): {change.command}"


def drive(ctx: ModuleContext, plan: "ModuleResult | Plan") -> ModuleResult:
    """Run a module's plan: make each yielded Change (check mode: record it only) and send back its Done.

    The framework owns `changed` (a change succeeded and none failed; a result a module reports from
    elsewhere, such as an async job's, may say changed too), the diffs (those of the changes, when
    --diff is on, before any the module recorded itself) and check mode.
    """
    if isinstance(plan, ModuleResult):
        return plan
    diffs: list[Diff] = []
    changed, failed = False, ""
    try:
        change = next(plan)
        while True:
            if ctx.check and change.check_result is not None:
                plan.close()
                return change.check_result
            if ctx.diff:
                diffs += change.diffs()
            try:
                done = NOT_RUN if ctx.check else make(ctx, change)
            except Exception as exc:  # noqa: BLE001 - raised where the module yielded: it may catch it, else it goes on up
                change = plan.throw(exc)
                continue
            if done.ok and done.changed:
                changed = True
            elif not done.ok and not change.may_fail and not failed:
                failed = failure_message(change, done)
            change = plan.send(done)
    except StopIteration as stop:
        result = stop.value if stop.value is not None else ModuleResult()
    result.diff = diffs + result.diff
    if failed:
        result.failed, result.msg = True, failed
    result.changed = (changed or result.changed) and not failed
    return result


def refuse_option(value: Any, field: str, *, pos: Pos | None = None, path: bool = False) -> None:
    """The one guard against option injection: refuse a value (or list element) starting with '-'.

    A value that a module passes to a remote program (git, curl, apt-get, chown, stat...) and that
    starts with '-' would be read by that program as an option (`--upload-pack=CMD` runs CMD).
    """
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, str) and item.startswith("-"):
            hint = ("write a relative path that starts with '-' as ./" + item if path
                    else "a value starting with '-' would be read as an option by the program it is passed to")
            raise ArgumentError(f"value {item!r} starts with '-' and is refused (option injection)", pos=pos,
                                field=field, hint=hint)


def coerce(value: Any, kind: str, *, name: str, pos: Pos | None = None, elements: str | None = None) -> Any:
    """Convert `value` to the argument type `kind`, or raise ArgumentError."""

    def bad(expected: str) -> ArgumentError:
        return ArgumentError(
            f"expected {expected}, got {type(value).__name__} {value!r}", pos=pos, field=name
        )

    if kind == "raw" or value is None:
        return value
    if kind in ("str", "path"):
        if isinstance(value, (dict, list)):
            raise bad("a string")
        if isinstance(value, bool):
            return "True" if value else "False"
        return value if isinstance(value, str) else str(value)  # a str stays itself: Unsafe text stays unsafe
    if kind == "bool":
        try:
            return to_bool(value)
        except NotABoolean:
            raise bad("a boolean (yes/no, true/false)") from None
    if kind == "int":
        if isinstance(value, bool):
            raise bad("an integer")
        try:
            return int(str(value).strip(), 0) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise bad("an integer") from None
    if kind == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if kind == "list":
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        if elements:
            return [coerce(item, elements, name=name, pos=pos) for item in value]
        return list(value)
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        return dict(value)
    raise ValueError(f"unknown argument type {kind!r}")


def validate_args(module: Module, args: Mapping[str, Any], *, final: bool, pos: Pos | None = None) -> dict[str, Any]:
    """Check `args` against the module's schema and return them with aliases resolved.

    `final=False` is the load-time check: unknown names always fail, but values that still hold a
    template are not type-checked and missing required arguments are only reported when no
    template could supply them. `final=True` runs after templating: types, choices, required and
    defaults are all applied.
    """
    spec = module.args
    lookup: dict[str, str] = {}
    for arg_name, arg in spec.items():
        lookup[arg_name] = arg_name
        for alias in arg.aliases:
            lookup[alias] = arg_name
    out: dict[str, Any] = {}
    for key, value in args.items():
        canonical = lookup.get(key)
        if canonical is None and module.any_args:
            out[key] = value
            continue
        if canonical is None:
            near = difflib.get_close_matches(str(key), list(lookup), n=3)
            hint = (f"did you mean: {', '.join(near)}? " if near else "") + "allowed: " + ", ".join(sorted(spec))
            raise ArgumentError(f"unknown argument '{key}' for module '{module.name}'", pos=pos, field=str(key), hint=hint)
        out[canonical] = value
    for arg_name, arg in spec.items():
        if arg_name not in out:
            if arg.required:
                raise ArgumentError(
                    f"missing required argument '{arg_name}' for module '{module.name}'",
                    pos=pos,
                    field=arg_name,
                    hint=arg.help or None,
                )
            if final:
                out[arg_name] = arg.default
            continue
        value = out[arg_name]
        if not final and is_template(value):
            continue
        if value is None:
            continue
        try:
            value = coerce(value, arg.type, name=arg_name, pos=pos, elements=arg.elements if final else None)
        except ArgumentError:
            if not final and any(is_template(v) for v in (value if isinstance(value, list) else [])):
                continue
            raise
        if arg.word or arg.type == "path" or (arg.type == "list" and arg.elements == "path"):
            refuse_option(value, arg_name, pos=pos, path=arg.type == "path")
        if arg.choices is not None and value not in arg.choices:
            raise ArgumentError(
                f"value {value!r} is not one of the allowed choices",
                pos=pos,
                field=arg_name,
                hint="choose one of: " + ", ".join(str(c) for c in arg.choices),
            )
        out[arg_name] = value
    return out
