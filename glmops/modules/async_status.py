"""async_status: the state of a job started by a task with `async:` and `poll: 0`."""

from __future__ import annotations

from typing import Any

from glmops.errors import ArgumentError
from glmops.modules import _async
from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult


class AsyncStatusModule(Module):
    name = "async_status"
    doc = (
        "Read the state of a background job started with `async:` and `poll: 0` (as Ansible's "
        "async_status): `finished` is false while it runs and true when it ended (booleans, as 2.19), then the result holds the "
        "command's rc, stdout and stderr and fails when the command failed. Use it with "
        "`until: job.finished`, `retries` and `delay`. `mode: cleanup` removes the job's files."
    )
    args = {
        "jid": Arg("str", required=True, aliases=("id",), help="The ansible_job_id the async task registered."),
        "mode": Arg("str", default="status", choices=("status", "cleanup"), help="status: read it; cleanup: remove its files."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if not _async.valid_jid(str(args["jid"])):
            raise ArgumentError(f"invalid job id {args['jid']!r}", field="jid", hint="use the ansible_job_id registered by the async task")

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        jid = str(args["jid"])
        directory = _async.jobs_dir(ctx)
        if args["mode"] == "cleanup":
            _async.cleanup(ctx, directory, jid)
            return ModuleResult(changed=False, data={"ansible_job_id": jid, "erased": f"{directory}/{jid}"})
        answer = _async.job_result(ctx, directory, jid)
        data = {k: v for k, v in answer.items() if k not in ("changed", "failed", "msg")}
        # As Ansible: a running job is not a change; a finished one reports the command's outcome.
        return ModuleResult(changed=bool(answer.get("changed")) and bool(answer["finished"]), failed=bool(answer.get("failed")),
                            msg=answer.get("msg", ""), data=data)


MODULE = AsyncStatusModule
