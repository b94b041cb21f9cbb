"""apt: install, upgrade or remove Debian/Ubuntu packages."""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator
from typing import Any

from glmops.modules.base import Arg, Change, Done, Module, ModuleContext, ModuleResult, Plan

LOCK_WAIT = (
    "command -v fuser >/dev/null 2>&1 && w=0 && while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; do "
    "w=$((w+1)); [ $w -ge {timeout} ] && {{ echo 'timed out waiting for the dpkg lock' >&2; exit 75; }}; sleep 1; done"
)
APT_ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a"


def split_spec(spec: str) -> tuple[str, str | None]:
    """'git=1:2.39.5-0+deb12u1' -> ('git', '1:2.39.5-0+deb12u1')."""
    name, sep, version = spec.partition("=")
    return name.strip(), (version.strip() if sep else None)


class AptModule(Module):
    name = "apt"
    doc = (
        "Install (`present`), upgrade (`latest`) or remove (`absent`) Debian packages with apt-get. "
        "Reads the installed state of all packages with one dpkg-query first and runs apt-get only "
        "for what must change. Updates the package lists only when asked and when they are older "
        "than `cache_valid_time`. Waits for the dpkg lock (another apt run, unattended-upgrades)."
    )
    args = {
        "name": Arg("list", elements="str", word=True, aliases=("pkg", "package"), help="Package names; 'name=version' pins a version."),
        "state": Arg("str", default="present", choices=("present", "latest", "absent"), help="What to do with the packages."),
        "update_cache": Arg("bool", default=False, aliases=("update-cache",), help="Run apt-get update first (only when older than cache_valid_time)."),
        "cache_valid_time": Arg("int", default=0, help="Seconds the package lists stay fresh; 0 = always update when update_cache is set."),
        "install_recommends": Arg("bool", aliases=("install-recommends",), help="Install recommended packages (apt's default when unset)."),
        "purge": Arg("bool", default=False, help="With state=absent, remove configuration files too."),
        "autoremove": Arg("bool", default=False, help="Remove packages that were only needed by removed ones."),
        "lock_timeout": Arg("int", default=120, help="Seconds to wait for the dpkg lock."),
    }

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        specs = [split_spec(s) for s in (args.get("name") or [])]
        names = [n for n, _ in specs]
        result = ModuleResult(data={"packages": []})
        if args["update_cache"]:
            updated = yield from self._update_cache(ctx, args)
            if isinstance(updated, ModuleResult):
                return updated
            result.data["cache_updated"] = updated
        if not names:
            return result
        installed = self._installed(ctx, names)
        if args["state"] == "absent":
            todo = [n for n in names if n in installed]
        elif args["state"] == "present":
            todo = [n for n, v in specs if n not in installed or (v is not None and not installed[n].startswith(v))]
        else:
            upgradable = self._upgradable(ctx, names)
            todo = [n for n in names if n not in installed or n in upgradable]
        result.data["packages"] = todo
        if not todo:
            return result
        result.msg = f"{'removed' if args['state'] == 'absent' else 'installed'}: {', '.join(todo)}"
        versions = dict(specs)
        words = [f"{n}={versions[n]}" if versions.get(n) else n for n in todo]
        if args["state"] == "absent":
            command = "remove" + (" --purge" if args["purge"] else "")
        else:
            command = "install"
        options = ["-y", "-q", "-o", f"DPkg::Lock::Timeout={args['lock_timeout']}",
                   "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
        if args.get("install_recommends") is not None and args["state"] != "absent":
            options.append("--install-recommends" if args["install_recommends"] else "--no-install-recommends")
        script = (
            LOCK_WAIT.format(timeout=args["lock_timeout"])
            + f"; {APT_ENV} apt-get {' '.join(options)} {command} "
            + " ".join(shlex.quote(w) for w in words)
        )
        if args["autoremove"]:
            script += f" && {APT_ENV} apt-get -y -q autoremove"
        done = yield Change(command=script, timeout=3600, may_fail=True, reason=result.msg)
        if not done.ran:  # check mode
            return result
        if done.rc != 0:
            return ModuleResult(failed=True, msg=f"apt-get {command} failed (rc={done.rc}): {done.stderr.strip()[-2000:]}",
                                data={"stdout": done.stdout[-4000:], "stderr": done.stderr[-4000:], "packages": todo})
        result.data["stdout"] = done.stdout[-4000:]
        return result

    @staticmethod
    def _installed(ctx: ModuleContext, names: list[str]) -> dict[str, str]:
        """{package: version} of those installed, with one dpkg-query."""
        query = ctx.run("dpkg-query -W -f='${Package} ${Status} ${Version}\\n' -- " + " ".join(shlex.quote(n) for n in names) + " 2>/dev/null; true")
        installed = {}
        for line in query.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[3] == "installed":
                installed[fields[0]] = fields[4]
        return installed

    @staticmethod
    def _upgradable(ctx: ModuleContext, names: list[str]) -> set[str]:
        policy = ctx.run("LC_ALL=C apt-cache policy " + " ".join(shlex.quote(n) for n in names))
        out, current, installed = set(), None, None
        for line in policy.stdout.splitlines():
            if line and not line.startswith(" "):
                current = line.rstrip(":")
            elif "Installed:" in line:
                installed = line.split(":", 1)[1].strip()
            elif "Candidate:" in line and current:
                candidate = line.split(":", 1)[1].strip()
                if installed not in (None, "(none)") and candidate != installed:
                    out.add(current)
        return out

    @staticmethod
    def _update_cache(ctx: ModuleContext, args: dict[str, Any]) -> Generator[Change, Done, bool | ModuleResult]:
        """apt-get update unless the cache is younger than cache_valid_time: True when it is (to be) updated."""
        valid = args["cache_valid_time"]
        if valid:
            age = ctx.run("stamp=/var/lib/apt/periodic/update-success-stamp; [ -e $stamp ] || stamp=/var/lib/apt/lists; "
                          "echo $(( $(date +%s) - $(stat -c %Y $stamp 2>/dev/null || echo 0) ))")
            try:
                if int(age.stdout.strip()) < valid:
                    return False
            except ValueError:
                pass
        started = time.time()
        done = yield Change(command=LOCK_WAIT.format(timeout=args["lock_timeout"]) + f"; {APT_ENV} apt-get update -q && "
                            "mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp", timeout=1800,
                            may_fail=True, reason="update the package cache")
        if done.rc != 0:
            return ModuleResult(failed=True, msg=f"apt-get update failed after {time.time() - started:.0f} s: {done.stderr.strip()[-2000:]}")
        return True


MODULE = AptModule
