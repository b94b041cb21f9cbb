"""pip: install Python packages, optionally into a virtualenv that it creates."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._output import excerpt
from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan

_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def satisfied(spec: str, installed: dict[str, str]) -> bool:
    """Is the requirement `spec` (name with optional version specifiers) met by the installed versions?"""
    match = _SPEC.match(spec)
    if not match:
        return False
    name, constraint = normalize(match.group(1)), match.group(3).strip()
    if name not in installed:
        return False
    if not constraint:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return Version(installed[name]) in SpecifierSet(constraint)
    except Exception:  # noqa: BLE001 - an unusual specifier: let pip decide
        return False


class PipModule(Module):
    name = "pip"
    doc = (
        "Install (`present`), upgrade (`latest`), reinstall (`forcereinstall`) or remove (`absent`) "
        "Python packages with pip, into `virtualenv` (created with `virtualenv_command` when missing) "
        "or with `executable`. Reads what is installed with one `pip list` and runs pip only for "
        "packages that are missing or do not satisfy their version specifiers, so changed is reported "
        "only when something was installed. With `requirements`, pip's own dry run decides."
    )
    args = {
        "name": Arg("list", elements="str", word=True, help="Packages, with optional version specifiers ('torch==2.1.2', 'transformers>=4.40,<4.41')."),
        "requirements": Arg("path", help="A requirements file on the host."),
        "virtualenv": Arg("path", aliases=("virtualenv_dir",), help="A virtualenv directory; created when missing."),
        "virtualenv_command": Arg("str", default="python3 -m venv", help="Command that creates the virtualenv."),
        "virtualenv_python": Arg("str", word=True, help="Python used to create the virtualenv (replaces python3 in virtualenv_command)."),
        "virtualenv_site_packages": Arg("bool", default=False, help="Give the virtualenv access to the system site-packages."),
        "executable": Arg("path", help="The pip to run (default: the virtualenv's, else pip3)."),
        "extra_args": Arg("str", help="More pip arguments, e.g. '-i https://mirror/simple'."),
        "state": Arg("str", default="present", choices=("present", "latest", "absent", "forcereinstall"), help="What to do."),
        "chdir": Arg("path", help="Directory to run pip in."),
    }

    def check_args(self, args: dict[str, Any]) -> None:
        if not args.get("name") and not args.get("requirements"):
            raise ArgumentError("give 'name' or 'requirements'", field="name")
        if args.get("virtualenv") and args.get("executable"):
            raise ArgumentError("give only one of 'virtualenv' and 'executable'", field="executable")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        result = ModuleResult(data={"packages": []})
        pip = shlex.quote(args["executable"]) if args.get("executable") else "pip3"
        if args.get("virtualenv"):
            venv = args["virtualenv"]
            pip = shlex.quote(f"{venv.rstrip('/')}/bin/pip")
            exists = ctx.run(f"[ -x {pip} ]").rc == 0
            if not exists:
                result.data["virtualenv_created"] = True
                command = args["virtualenv_command"]
                if args.get("virtualenv_python"):
                    command = command.replace("python3", shlex.quote(args["virtualenv_python"]), 1)
                if args["virtualenv_site_packages"]:
                    command += " --system-site-packages"
                made = yield Change(command=f"{command} {shlex.quote(venv)}", cwd=args.get("chdir"), timeout=600, may_fail=True,
                                    reason=f"create the virtualenv {venv}")
                if not made.ran:  # check mode: nothing to list in a virtualenv that is not there yet
                    result.data["packages"] = list(args.get("name") or [])
                    return result
                if made.rc != 0:
                    return ModuleResult(failed=True, msg=f"creating the virtualenv {venv} failed: {made.stderr.strip()}")
        extra = args.get("extra_args") or ""
        if args.get("requirements"):
            return (yield from self._requirements(ctx, pip, args, extra, result))
        listing = ctx.run(f"{pip} list --format=json --disable-pip-version-check 2>/dev/null", cwd=args.get("chdir"))
        try:
            installed = {normalize(p["name"]): p["version"] for p in json.loads(listing.stdout or "[]")}
        except json.JSONDecodeError:
            installed = {}
        specs = args["name"]
        state = args["state"]
        if state == "absent":
            todo = [s for s in specs if normalize(_SPEC.match(s).group(1)) in installed] if specs else []  # type: ignore[union-attr]
            command = f"{pip} uninstall -y"
        elif state == "present":
            todo = [s for s in specs if not satisfied(s, installed)]
            command = f"{pip} install"
        elif state == "latest":
            todo = list(specs)
            command = f"{pip} install --upgrade"
        else:
            todo = list(specs)
            command = f"{pip} install --force-reinstall"
        if state == "latest":
            dry = ctx.run(f"{command} --dry-run --quiet --report - --disable-pip-version-check {extra} "
                          + " ".join(shlex.quote(s) for s in todo), cwd=args.get("chdir"), timeout=900)
            todo = self._from_report(dry.stdout) if dry.rc == 0 else todo
        return (yield from self._apply(f"{command} --disable-pip-version-check {extra} " + " ".join(shlex.quote(s) for s in todo), todo, args,
                                       result))

    def _requirements(self, ctx: ModuleContext, pip: str, args: dict[str, Any], extra: str, result: ModuleResult) -> Plan:
        req = shlex.quote(args["requirements"])
        upgrade = "--upgrade " if args["state"] == "latest" else ""
        dry = ctx.run(f"{pip} install {upgrade}--dry-run --quiet --report - --disable-pip-version-check {extra} -r {req}",
                      cwd=args.get("chdir"), timeout=900)
        if dry.rc != 0:
            return ModuleResult(failed=True, msg=f"pip could not resolve {args['requirements']}: {dry.stderr.strip()[-2000:]}")
        todo = self._from_report(dry.stdout)
        return (yield from self._apply(f"{pip} install {upgrade}--disable-pip-version-check {extra} -r {req}", todo, args, result))

    @staticmethod
    def _apply(command: str, todo: list[str], args: dict[str, Any], result: ModuleResult) -> Plan:
        """Yield the pip run when something must change; report what changed."""
        if not todo:
            return result
        result.data["packages"] = todo
        done = yield Change(command=command, cwd=args.get("chdir"), timeout=3600, may_fail=True, reason="pip " + " ".join(todo))
        if not done.ran:  # check mode
            return result
        if done.rc != 0:
            return ModuleResult(failed=True, msg=f"pip failed (rc={done.rc}):\n{excerpt(done.stderr or done.stdout)}",
                                data={"stdout": done.stdout[-4000:], "stderr": done.stderr[-4000:]})
        result.data["stdout"] = done.stdout[-4000:]
        return result

    @staticmethod
    def _from_report(text: str) -> list[str]:
        """Package==version that pip's --dry-run --report would install."""
        try:
            report = json.loads(text)
        except json.JSONDecodeError:
            return []
        return [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in report.get("install", [])]


MODULE = PipModule
