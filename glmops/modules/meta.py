"""meta: actions on the run itself (`meta: flush_handlers`, `end_play`, `end_host`, `noop`...)."""

from __future__ import annotations

from typing import Any

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

ACTIONS = ("flush_handlers", "end_play", "end_host", "end_batch", "noop", "clear_host_errors", "clear_facts",
           "refresh_inventory", "reset_connection", "end_role")


class MetaModule(Module):
    name = "meta"
    doc = (
        "An action on the run, carried out by the runner: `flush_handlers` (run notified handlers now), "
        "`end_play` (stop the play for every host), `end_host` (stop the play for this host, not a failure), "
        "`end_batch`, `end_role`, `clear_facts`, `clear_host_errors`, `reset_connection`, `refresh_inventory`, "
        "`noop`. Written `meta: ACTION`; `register` stores nothing, as Ansible."
    )
    on_controller = True
    free_form = "action"
    args = {"action": Arg("str", required=True, aliases=("_raw_params",), choices=ACTIONS, help="The action.")}

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        return ModuleResult(data={"meta": args["action"]})


MODULE = MetaModule
