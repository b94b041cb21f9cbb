"""set_fact: set host variables for the rest of the run."""

from __future__ import annotations

import re
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SetFactModule(Module):
    name = "set_fact"
    doc = "Set variables for this host (`name: value` pairs, templated), visible to later tasks and plays of the run."
    on_controller = True
    any_args = True
    result_is_code = True  # the values are the task's own (rendered: data a template read stays unsafe)
    args = {"cacheable": Arg("bool", default=False, help="Accepted for Ansible compatibility; facts are not cached between runs.")}

    def check_args(self, args: dict[str, Any]) -> None:
        names = [k for k in args if k != "cacheable"]
        if not names:
            raise ArgumentError("set_fact needs at least one 'name: value'", field="set_fact")
        for name in names:
            if not _NAME.match(str(name)):
                raise ArgumentError(f"'{name}' is not a valid variable name", field=str(name))

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        facts = {k: v for k, v in args.items() if k != "cacheable"}
        return ModuleResult(facts=facts, data={"ansible_facts": facts})


MODULE = SetFactModule
