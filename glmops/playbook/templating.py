"""Jinja2 rendering of playbook values: `{{ }}` in any string, bare expressions in `when`.

StrictUndefined: an undefined variable is an error that names the variable and the task field.
A string that is exactly one `{{ expression }}` renders to the expression's native value (a list
for `loop`, an int, a dict), as Ansible does; other strings render to text.

Data from hosts is never code (docs/playbooks.md, "Data from hosts"): it arrives as `Unsafe` text
(`values.to_unsafe`), which is never rendered nor evaluated. A render that reads unsafe data (a
variable, an attribute or item, a lookup's result) is tainted: every string of its result is
marked `Unsafe` too, so `"{{ out.stdout | trim }}"` stored by set_fact or passed to `debug var=`
stays data (Ansible's rule before 2.19).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Callable

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes, pass_context
from jinja2.exceptions import FilterArgumentError, SecurityError, TemplateRuntimeError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from glmops.errors import Pos, TemplateError
from glmops.output.redact import is_secret_name
from glmops.playbook.filters import FILTERS, TESTS, type_debug
from glmops.values import Unsafe, contains_unsafe, has_template, is_template, to_unsafe

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
_TAINTED: ContextVar[bool] = ContextVar("glmops_template_tainted", default=False)  # this render read unsafe data


def _note(value: Any) -> Any:
    """`value`, read by the render in progress; taints the render when it is or holds unsafe data."""
    if not _TAINTED.get() and contains_unsafe(value):
        _TAINTED.set(True)
    return value


def _tracked(render: Callable[[], Any]) -> Any:
    """Run one render; when it read unsafe data, its result is unsafe (every string in it), and so
    is the render around it (which reads this result)."""
    token = _TAINTED.set(False)
    try:
        result = render()
        tainted = _TAINTED.get()
    finally:
        _TAINTED.reset(token)
    if not tainted:
        return result
    _TAINTED.set(True)  # the enclosing render (if any) read this result; each render starts untainted
    return to_unsafe(result)


class _Context(Context):
    """Jinja2's context; every variable a template reads by name is noted (taint)."""

    def resolve_or_missing(self, key: str) -> Any:
        return _note(super().resolve_or_missing(key))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox; every attribute and item a template reads is noted (taint)."""

    context_class = _Context

    def getattr(self, obj: Any, attribute: str) -> Any:
        return _note(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _note(super().getitem(obj, argument))


class _Undefined(ChainableUndefined, StrictUndefined):
    """Strict when used (printed, iterated, compared, tested for truth), but chainable as Ansible's:
    `foo.bar | default('x')` and `foo.bar is defined` work when `foo` is undefined."""

    __slots__ = ()


def _search_dirs(context: Any, kind: str) -> list[str]:
    """Controller folders a lookup searches for a relative name: the role's `kind/` and the role,
    then the playbook directory's `kind/` and the directory itself (as Ansible does)."""
    import os

    bases = [context.get("role_path"), context.get("playbook_dir")]
    return [os.path.join(b, sub) for b in bases if isinstance(b, str) and not isinstance(b, Undefined) for sub in (kind, "")]


def _find(context: Any, kind: str, name: str, dirs: list[str] | None = None) -> str | None:
    """The controller path of `name` (absolute, or found in `dirs`, by default _search_dirs), or None."""
    import os

    if os.path.isabs(name):
        return name if os.path.exists(name) else None
    dirs = _search_dirs(context, kind) if dirs is None else dirs
    return next((c for c in (os.path.join(d, name) for d in dirs) if os.path.exists(c)), None)


def _lookup_file(context: Any, terms: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    values = []
    for term in terms:
        path = _find(context, "files", str(term)) or str(term)
        try:
            with open(path, encoding="utf-8") as handle:
                values.append(handle.read().rstrip("\n") if options.get("rstrip", True) else handle.read())
        except OSError as exc:
            raise ValueError(f"lookup('file'): cannot read {term!r}: {exc.strerror}") from None
    return values


def _lookup_first_found(context: Any, terms: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    """The first existing file among `terms` (names, lists of names, or {files, paths} mappings)."""
    import os

    candidates: list[str] = []

    def add(term: Any, paths: list[str]) -> None:
        if isinstance(term, Mapping):
            files = term.get("files", [])
            more = term.get("paths", [])
            files = [f for part in ([files] if isinstance(files, str) else files) for f in str(part).split(",") if f]
            more = [p for part in ([more] if isinstance(more, str) else more) for p in str(part).split(",") if p]
            for name in files:
                add(name, more)
        elif isinstance(term, (list, tuple)):
            for item in term:
                add(item, paths)
        else:
            candidates.extend([os.path.join(p, str(term)) for p in paths] if paths else [str(term)])

    if "files" in options:
        add({"files": options["files"], "paths": options.get("paths", [])}, [])
    for term in terms:
        add(term, [])
    # ansible-core 2.19: a role's files/ and the role, then the playbook's directory (not its files/)
    dirs = [d for d in _search_dirs(context, "files") if d.rstrip("/") != str(context.get("playbook_dir")).rstrip("/") + "/files"]
    for candidate in candidates:
        found = _find(context, "files", candidate, dirs)
        if found:
            return [os.path.abspath(found)]
    if options.get("skip"):
        return []
    raise ValueError("lookup('first_found'): no file was found; tried: " + ", ".join(candidates))


def _lookup_pipe(context: Any, terms: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    """Run each term as a shell command on the controller (in the playbook's directory); its stdout."""
    import subprocess

    cwd = context.get("playbook_dir")
    values = []
    for term in terms:
        done = subprocess.run(str(term), shell=True, capture_output=True, text=True,  # noqa: S602 - pipe is a shell
                              cwd=cwd if isinstance(cwd, str) else None)
        if done.returncode != 0:
            raise ValueError(f"lookup('pipe'): {term!r} returned {done.returncode}: {done.stderr.strip()}")
        values.append(done.stdout.rstrip())
    return values


def _lookup_template(context: Any, terms: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    """Render controller template files (found in templates/) with the current variables."""
    templar = context.environment.glmops_templar
    variables = {**context.get_all(), **dict(options.get("template_vars") or {})}
    values = []
    for term in terms:
        path = _find(context, "templates", str(term))
        if path is None:
            raise ValueError(f"lookup('template'): could not find {term!r} (looked in: {', '.join(_search_dirs(context, 'templates'))})")
        with open(path, encoding="utf-8") as handle:
            values.append(templar.render_text(handle.read(), {**variables, "template_path": path}, name=path))
    return values


def _lookup_vars(context: Any, terms: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    """The values of the variables named by `terms` (rendered); `default=` for a missing one."""
    templar = context.environment.glmops_templar
    variables = context.get_all()
    values = []
    for term in terms:
        if str(term) in variables and not isinstance(variables[str(term)], Undefined):
            values.append(templar.render(variables[str(term)], variables))
        elif "default" in options:
            values.append(options["default"])
        else:
            raise ValueError(f"lookup('vars'): no variable named {term!r}")
    return values


def _lookup_env(context: Any, terms: tuple[Any, ...], options: dict[str, Any]) -> list[Any]:
    import os

    return [os.environ.get(str(term), options.get("default", "")) for term in terms]


_LOOKUP_PLUGINS: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], list[Any]]] = {
    "env": _lookup_env,
    "file": _lookup_file,
    "first_found": _lookup_first_found,
    "pipe": _lookup_pipe,
    "template": _lookup_template,
    "vars": _lookup_vars,
    "list": lambda context, terms, options: list(terms),
}
_LOOKUPS = tuple(_LOOKUP_PLUGINS)
_DATA_LOOKUPS = frozenset({"file", "pipe"})  # read from outside the playbook (a fetched file, a command): unsafe, as Ansible's


@pass_context
def _lookup(context: Any, plugin: str, *terms: Any, **options: Any) -> Any:
    """The `lookup()` plugins this subset has (see _LOOKUP_PLUGINS), as Ansible's, on the controller.

    A value read under a secret-looking name (`lookup('env', 'HF_TOKEN')`, a file named
    api_key.txt) is reported to the run's redaction as a secret.
    """
    import os

    plugin = plugin.removeprefix("ansible.builtin.")
    if plugin not in _LOOKUP_PLUGINS:
        raise ValueError(f"lookup plugin '{plugin}' is not supported (supported: {', '.join(_LOOKUPS)})")
    wantlist = options.pop("wantlist", False)
    if plugin != "first_found" and len(terms) == 1 and isinstance(terms[0], (list, tuple)):
        terms = tuple(terms[0])  # lookup('list', [1, 2]) == lookup('list', 1, 2)
    values = _LOOKUP_PLUGINS[plugin](context, terms, options)
    if plugin in _DATA_LOOKUPS:
        values = to_unsafe(values)
    _note(values)
    on_secret = getattr(context.environment, "glmops_on_secret", None)
    if on_secret is not None and plugin in ("env", "file"):
        for term, value in zip(terms, values):
            if is_secret_name(os.path.basename(str(term))):
                on_secret(value)
    if wantlist or plugin == "list" or not values:  # as ansible-core 2.19: the list lookup and an empty result stay lists
        return values
    return ",".join(str(v) for v in values) if len(values) != 1 else values[0]


@pass_context
def _query(context: Any, plugin: str, *terms: Any, **options: Any) -> list[Any]:
    """`query(...)`: `lookup(..., wantlist=True)`."""
    return _lookup(context, plugin, *terms, **{**options, "wantlist": True})


def _environment() -> _Environment:
    env = _Environment(undefined=_Undefined, keep_trailing_newline=True, autoescape=False, finalize=_defined)
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals["lookup"] = _lookup
    env.globals["query"] = env.globals["q"] = _query
    return env


def _defined(value: Any) -> Any:
    """An expression's value; an undefined one raises (StrictUndefined only raises when used).

    Containers are checked all the way down: `{{ [x] }}` or `{{ {'k': x} }}` with `x` undefined
    would otherwise hold Undefined objects that fail later, far from the task (printing, JSON).
    """
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _defined(key)
            _defined(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _defined(item)
    return value


class _Vars(Mapping):
    """Ansible's magic `vars`: every variable of the host and task by name, rendered when read."""

    def __init__(self, templar: "Templar", variables: Mapping[str, Any]) -> None:
        self._templar, self._variables = templar, variables

    def __getitem__(self, name: str) -> Any:
        value = self._variables[name]
        return self._templar.render(value, self._variables) if has_template(value) else value

    def __iter__(self) -> Any:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)


class Templar:
    """Renders values with a set of variables. One instance serves a whole run (it caches)."""

    def __init__(self, on_secret: Callable[[Any], None] | None = None) -> None:
        """`on_secret` is told every value that turned out secret while rendering (the value of a
        variable with a secret-looking name, a secret env/file lookup): the run's redaction."""
        self.env = _environment()
        self.on_secret = on_secret
        self.env.glmops_on_secret = on_secret  # type: ignore[attr-defined]  # read by lookup()
        self.env.glmops_templar = self  # type: ignore[attr-defined]  # the template and vars lookups render
        self._compile = lru_cache(maxsize=4096)(self.env.from_string)
        self._file_envs: dict[tuple[bool, bool, str], Any] = {}  # template files: one environment per option set
        self._compile_expr = lru_cache(maxsize=4096)(self.env.compile_expression)
        self._parse = lru_cache(maxsize=4096)(self.env.parse)  # one parse per source, for both name lists
        self._names = lru_cache(maxsize=4096)(self._referenced_names)
        self._lookups_cached = lru_cache(maxsize=4096)(self._lookups)

    def _referenced_names(self, source: str) -> frozenset[str]:
        try:
            return frozenset(meta.find_undeclared_variables(self._parse(source)))
        except TemplateSyntaxError:
            return frozenset()

    def _resolve(self, source: str, variables: Mapping[str, Any], depth: int, pos: Pos | None = None,
                 field: str | None = None) -> Mapping[str, Any]:
        """Variables whose values are templates themselves are rendered first, as Ansible does.

        Only the variables `source` refers to are rendered (lazily, recursively). An error inside
        such a value is reported at the place that uses the variable, naming the variable.
        """
        updates = {}
        if "vars" not in variables and "vars" in self._names(source):
            updates["vars"] = _Vars(self, variables)  # Ansible's magic `vars`: every variable, by name
        for name in self._names(source):
            value = variables.get(name)
            if has_template(value):
                if depth > 20:
                    raise TemplateError(f"recursive loop detected while rendering variable '{name}'", pos=pos, field=field,
                                        hint="a variable's value refers back to itself")
                try:
                    updates[name] = self.render(value, variables, _depth=depth + 1)
                    if self.on_secret is not None and is_secret_name(name):
                        self.on_secret(updates[name])
                except TemplateError as exc:
                    if exc.pos is not None or "recursive loop" in exc.message:
                        raise
                    raise TemplateError(f"{exc.message} (in the value of variable '{name}')", pos=pos, field=field,
                                        hint=exc.hint) from None
        return {**variables, **updates} if updates else variables

    is_template = staticmethod(is_template)

    def _lookups(self, source: str) -> frozenset[str]:
        """Names `source` reads: its undeclared variables, and the attribute names and constant keys
        it looks up (`ansible_facts.os_family`, `hostvars[h]['ansible_host']`)."""
        try:
            tree = self._parse(source)
        except TemplateSyntaxError:
            return frozenset()
        names = set(self._names(source))
        names.update(node.attr for node in tree.find_all(nodes.Getattr))
        names.update(node.arg.value for node in tree.find_all(nodes.Getitem)
                     if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str))
        return frozenset(names)

    def referenced_names(self, value: Any, *, expression: bool = False) -> frozenset[str]:
        """Every name the templates inside `value` (strings, lists, dicts) read; `expression=True`
        reads strings as bare expressions (`when`, `until`, `changed_when`, `failed_when`)."""
        if isinstance(value, str):
            if expression and not _SINGLE_EXPRESSION.match(value):
                return self._lookups_cached("{{ " + value + " }}")
            return self._lookups_cached(value) if is_template(value) else frozenset()
        if isinstance(value, Mapping):
            return frozenset().union(*(self.referenced_names(v, expression=expression) for kv in value.items() for v in kv))
        if isinstance(value, (list, tuple)):
            return frozenset().union(*(self.referenced_names(v, expression=expression) for v in value))
        return frozenset()

    def names_through_variables(self, names: frozenset[str], variables: Mapping[str, Any]) -> frozenset[str]:
        """`names` plus, recursively, the names read by the variables among them whose values are templates."""
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            value = variables.get(name)
            if has_template(value):
                todo.extend(self.referenced_names(value))
        return frozenset(seen)

    def _fail(self, exc: Exception, text: str, pos: Pos | None, field: str | None) -> TemplateError:
        if isinstance(exc, UndefinedError):
            message = str(exc.message or exc)
            match = re.search(r"'([^']+)' is undefined", message)
            if match:
                return TemplateError(
                    f"undefined variable '{match.group(1)}' in {text!r}",
                    pos=pos,
                    field=field,
                    hint="define it (vars, inventory, -e) or give a fallback: {{ %s | default('...') }}" % match.group(1),
                )
            attr = re.search(r"has no attribute '([^']+)'", message)
            hint = (f"the value has no key '{attr.group(1)}': check the name, or guard it with "
                    f"'is defined' or '| default(...)'") if attr else None
            return TemplateError(f"{message} in {text!r}", pos=pos, field=field, hint=hint)
        if isinstance(exc, TemplateSyntaxError):
            hint = None
            if "No filter named" in str(exc.message) or "No test named" in str(exc.message):
                hint = "see docs/playbooks.md for the filters and tests glmops has"
            elif "unexpected '}'" in str(exc.message) or "expected token" in str(exc.message):
                hint = "check the brackets and quotes of the expression"
            return TemplateError(f"template syntax error: {exc.message} in {text!r}", pos=pos, field=field, hint=hint)
        return TemplateError(f"template error: {exc} in {text!r}", pos=pos, field=field)

    def _single_expression(self, text: str) -> Any:
        """The compiled expression when `text` is exactly one `{{ expression }}`, else None."""
        match = _SINGLE_EXPRESSION.match(text)
        if not match or "{%" in text:
            return None
        try:
            return self._compile_expr(match.group("expr").strip(), undefined_to_none=False)
        except TemplateSyntaxError:
            return None  # e.g. "{{ a }} and {{ b }}": a text template

    def _render_string(self, text: str, variables: Mapping[str, Any], pos: Pos | None, field: str | None, depth: int = 0) -> Any:
        if not self.is_template(text):
            return text
        try:
            return _tracked(lambda: self._render_now(text, variables, depth, pos, field))
        except (UndefinedError, TemplateSyntaxError, FilterArgumentError, TemplateRuntimeError, SecurityError,
                TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as exc:
            raise self._fail(exc, text, pos, field) from None

    def _render_now(self, text: str, variables: Mapping[str, Any], depth: int, pos: Pos | None, field: str | None) -> Any:
        variables = self._resolve(text, variables, depth, pos, field)
        expression = self._single_expression(text)
        if expression is not None:
            return _defined(expression(**variables))
        return self._compile(text).render(**variables)

    def render(self, value: Any, variables: Mapping[str, Any], *, pos: Pos | None = None, field: str | None = None, _depth: int = 0) -> Any:
        """Render every template inside `value` (strings, and recursively lists and dicts)."""
        if isinstance(value, str):
            return self._render_string(value, variables, pos, field, _depth)
        if isinstance(value, Mapping):
            return {
                self.render(k, variables, pos=pos, field=field, _depth=_depth): self.render(
                    v, variables, pos=pos, field=f"{field}.{k}" if field else str(k), _depth=_depth)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.render(v, variables, pos=pos, field=field, _depth=_depth) for v in value]
        return value

    def evaluate(self, expr: Any, variables: Mapping[str, Any], *, pos: Pos | None = None, field: str | None = None) -> Any:
        """Evaluate a bare expression (`when: x is defined and y == 1`); non-strings pass through."""
        if not isinstance(expr, str):
            return expr
        if isinstance(expr, Unsafe):
            shown = expr if len(expr) <= 80 else expr[:77] + "..."
            raise TemplateError(f"the expression {shown!r} comes from host data (or a template that read it) and is never evaluated",
                                pos=pos, field=field,
                                hint="name the variable in the expression itself (var: out.stdout, that: out.rc == 0) "
                                     "instead of building the expression with {{ }}")
        text = expr.strip()
        match = _SINGLE_EXPRESSION.match(text)
        if match:  # `when: "{{ x }}"` is accepted too
            text = match.group("expr").strip()
        try:
            return _tracked(lambda: self._evaluate_now(text, variables, pos, field))
        except (UndefinedError, TemplateSyntaxError, FilterArgumentError, TemplateRuntimeError, SecurityError,
                TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as exc:
            raise self._fail(exc, expr, pos, field) from None

    def _evaluate_now(self, text: str, variables: Mapping[str, Any], pos: Pos | None, field: str | None) -> Any:
        variables = self._resolve("{{ " + text + " }}", variables, 0, pos, field)
        return _defined(self._compile_expr(text, undefined_to_none=False)(**variables))

    def all_true(self, conditions: list[Any], variables: Mapping[str, Any], *, pos: Pos | None = None, field: str = "when") -> bool:
        """True when every condition holds (an empty list holds).

        As ansible-core 2.19: a condition must come out as a boolean. A string ("false", "yes"), a
        number, a list or None is an error, not a guess (`when: flag` with flag="false" would
        otherwise run the task).
        """
        for condition in conditions:
            value = self.evaluate(condition, variables, pos=pos, field=field)
            if not isinstance(value, bool):
                shown = condition if isinstance(condition, str) else repr(condition)
                match = _SINGLE_EXPRESSION.match(shown)
                shown = match.group("expr").strip() if match else shown.strip()
                raise TemplateError(
                    f"conditional {shown!r} gave a value of type '{type_debug(value)}' ({value!r}); "
                    "conditionals must have a boolean result (as in ansible-core 2.19)",
                    pos=pos, field=field,
                    hint=f"say what you mean: '{shown} | bool' for a yes/no word, '{shown} | length > 0' for a "
                         f"list or text, '{shown} is truthy' for Python truthiness")
            if not value:
                return False
        return True

    def _file_environment(self, trim_blocks: bool, lstrip_blocks: bool, newline_sequence: str) -> Any:
        """The environment a template file renders in (Ansible's template options), one per combination."""
        key = (trim_blocks, lstrip_blocks, newline_sequence)
        cache = self._file_envs
        if key not in cache:
            overlay = self.env.overlay(trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks, newline_sequence=newline_sequence)
            overlay.glmops_on_secret, overlay.glmops_templar = self.on_secret, self  # type: ignore[attr-defined]
            cache[key] = lru_cache(maxsize=256)(overlay.from_string)
        return cache[key]

    def render_text(self, text: str, variables: Mapping[str, Any], *, name: str, trim_blocks: bool = True,
                    lstrip_blocks: bool = False, newline_sequence: str = "\n") -> str:
        """Render a whole template file (the template module, the template lookup); errors name the file and line.

        As Ansible's template module: trim_blocks on (the newline after a block tag is removed),
        lstrip_blocks off, lines end with `newline_sequence`.
        """
        try:
            def render() -> str:
                resolved = self._resolve(text, variables, 0, Pos(name))
                return self._file_environment(trim_blocks, lstrip_blocks, newline_sequence)(text).render(**resolved)

            return _tracked(render)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}", pos=Pos(name, exc.lineno or 0),
                                hint="check the {{ }} / {% %} pairs around this line") from None
        except (UndefinedError, FilterArgumentError, TemplateRuntimeError, SecurityError, TypeError, ValueError,
                KeyError, AttributeError, ZeroDivisionError) as exc:
            pos = Pos(name, _template_line(exc))
            message = str(getattr(exc, "message", None) or exc)
            match = re.search(r"'([^']+)' is undefined", message)
            if match:
                raise TemplateError(f"undefined variable '{match.group(1)}' in template", pos=pos,
                                    hint="define it (vars, inventory, -e) or give a fallback: {{ %s | default('...') }}" % match.group(1)) from None
            raise TemplateError(f"template error: {message}", pos=pos) from None


def _template_line(exc: BaseException) -> int:
    """The template line an error was raised at (Jinja marks template frames as '<template>'); 0 if unknown."""
    line = 0
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
