"""Jinja2 rendering of playbook values: `{{ }}` in any string, bare expressions in `when`.

StrictUndefined: an undefined variable is an error that names the variable and the task field.
A string that is exactly one `{{ expression }}` renders to the expression's native value (a list
for `loop`, an int, a dict), as Ansible does; other strings render to text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Callable

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes, pass_context
from jinja2.exceptions import FilterArgumentError, SecurityError, TemplateRuntimeError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from glmops.errors import Pos, TemplateError
from glmops.output.redact import is_secret_name
from glmops.playbook.filters import FILTERS, TESTS
from glmops.values import has_template, is_template, truthy

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)
_LOOKUPS = ("env", "file")


class _Undefined(ChainableUndefined, StrictUndefined):
    """Strict when used (printed, iterated, compared, tested for truth), but chainable as Ansible's:
    `foo.bar | default('x')` and `foo.bar is defined` work when `foo` is undefined."""

    __slots__ = ()


@pass_context
def _lookup(context: Any, plugin: str, *terms: Any, **options: Any) -> Any:
    """The `lookup()` plugins this subset has: env (controller environment) and file (controller file).

    A value read under a secret-looking name (`lookup('env', 'HF_TOKEN')`, a file named
    api_key.txt) is reported to the run's redaction as a secret.
    """
    import os

    if plugin == "env":
        values = [os.environ.get(str(term), options.get("default", "")) for term in terms]
    elif plugin == "file":
        values = []
        for term in terms:
            path = str(term)
            if not os.path.isabs(path):
                bases = [context.get("role_path"), context.get("playbook_dir")]
                found = [os.path.join(b, sub, path) for b in bases if isinstance(b, str) for sub in ("files", "")]
                path = next((c for c in found if os.path.isfile(c)), path)
            try:
                with open(path, encoding="utf-8") as handle:
                    values.append(handle.read().rstrip("\n") if options.get("rstrip", True) else handle.read())
            except OSError as exc:
                raise ValueError(f"lookup('file'): cannot read {term!r}: {exc.strerror}") from None
    else:
        raise ValueError(f"lookup plugin '{plugin}' is not supported (supported: {', '.join(_LOOKUPS)})")
    on_secret = getattr(context.environment, "glmops_on_secret", None)
    if on_secret is not None:
        for term, value in zip(terms, values):
            if is_secret_name(os.path.basename(str(term))):
                on_secret(value)
    if options.get("wantlist"):
        return values
    return ",".join(str(v) for v in values) if len(values) != 1 else values[0]


@pass_context
def _query(context: Any, plugin: str, *terms: Any, **options: Any) -> list[Any]:
    """`query(...)`: `lookup(..., wantlist=True)`."""
    return _lookup(context, plugin, *terms, **{**options, "wantlist": True})


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=_Undefined, keep_trailing_newline=True, autoescape=False,
                                        finalize=_defined)
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


class Templar:
    """Renders values with a set of variables. One instance serves a whole run (it caches)."""

    def __init__(self, on_secret: Callable[[Any], None] | None = None) -> None:
        """`on_secret` is told every value that turned out secret while rendering (the value of a
        variable with a secret-looking name, a secret env/file lookup): the run's redaction."""
        self.env = _environment()
        self.on_secret = on_secret
        self.env.glmops_on_secret = on_secret  # type: ignore[attr-defined]  # read by lookup()
        self._compile = lru_cache(maxsize=4096)(self.env.from_string)
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
            variables = self._resolve(text, variables, depth, pos, field)
            expression = self._single_expression(text)
            if expression is not None:
                return _defined(expression(**variables))
            return self._compile(text).render(**variables)
        except (UndefinedError, TemplateSyntaxError, FilterArgumentError, TemplateRuntimeError, SecurityError,
                TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as exc:
            raise self._fail(exc, text, pos, field) from None

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
        text = expr.strip()
        match = _SINGLE_EXPRESSION.match(text)
        if match:  # `when: "{{ x }}"` is accepted too
            text = match.group("expr").strip()
        try:
            variables = self._resolve("{{ " + text + " }}", variables, 0, pos, field)
            return _defined(self._compile_expr(text, undefined_to_none=False)(**variables))
        except (UndefinedError, TemplateSyntaxError, FilterArgumentError, TemplateRuntimeError, SecurityError,
                TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as exc:
            raise self._fail(exc, expr, pos, field) from None

    def all_true(self, conditions: list[Any], variables: Mapping[str, Any], *, pos: Pos | None = None, field: str = "when") -> bool:
        """True when every condition holds (an empty list holds)."""
        for condition in conditions:
            if not truthy(self.evaluate(condition, variables, pos=pos, field=field)):
                return False
        return True

    def render_text(self, text: str, variables: Mapping[str, Any], *, name: str) -> str:
        """Render a whole template file (the template module); errors name the file and line."""
        try:
            variables = self._resolve(text, variables, 0, Pos(name))
            return self._compile(text).render(**variables)
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
