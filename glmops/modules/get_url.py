"""get_url: download a file on the host, resuming partial downloads, checked and atomic."""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from glmops.errors import ArgumentError
from glmops.modules._files import ATTR_ARGS, set_attrs, wanted_attrs
from glmops.connection.base import install_script
from glmops.connection.partfile import MISMATCH_RC, finish_script, parse_verified, prepare_part_script
from glmops.modules._remote import probe
from glmops.modules.base import Arg, Change, Module, ModuleContext, ModuleResult, Plan


class GetUrlModule(Module):
    name = "get_url"
    doc = (
        "Download `url` to `dest` on the host (with curl, or wget). The download goes to DEST.part and "
        "resumes from it after an interruption; the checksum is verified before DEST.part is renamed "
        "to DEST, so DEST is never half-written. When DEST exists and matches `checksum` (or exists "
        "and `force` is false), nothing is downloaded."
    )
    args = {
        "url": Arg("str", required=True, word=True, help="http, https or ftp URL."),
        "dest": Arg("path", required=True, help="File (or directory: the URL's file name is used) on the host."),
        "checksum": Arg("str", help="'sha256:HEX' the file must have."),
        "force": Arg("bool", default=False, help="Download again even if dest exists (skipped when the checksum matches)."),
        "headers": Arg("dict", help="HTTP headers."),
        "timeout": Arg("int", default=10, help="Connect timeout in seconds."),
        "url_username": Arg("str", word=True, help="HTTP basic auth user."),
        "url_password": Arg("str", no_log=True, help="HTTP basic auth password (never shown)."),
        "validate_certs": Arg("bool", default=True, help="Verify TLS certificates."),
        **ATTR_ARGS,
    }

    def check_args(self, args: dict[str, Any]) -> None:
        checksum = args.get("checksum")
        if checksum:
            algorithm, _, value = checksum.partition(":")
            if algorithm != "sha256" or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
                raise ArgumentError("checksum must be 'sha256:' followed by 64 hex digits", field="checksum")

    def plan(self, ctx: ModuleContext, args: dict[str, Any]) -> Plan:
        dest = args["dest"]
        state, _ = probe(ctx, dest, checksum=bool(args.get("checksum")))
        if state.type == "directory" or dest.endswith("/"):
            dest = posixpath.join(dest, posixpath.basename(args["url"].split("?")[0]) or "index.html")
            state, _ = probe(ctx, dest, checksum=bool(args.get("checksum")))
        wanted = args["checksum"].split(":", 1)[1].lower() if args.get("checksum") else None
        data: dict[str, Any] = {"dest": dest, "url": args["url"]}
        if state.exists and ((wanted and state.sha256 == wanted) or (not wanted and not args["force"])):
            result = ModuleResult(data={**data, "checksum_dest": state.sha256, "size": state.size})
            result.failed = not (yield from set_attrs(dest, state, wanted_attrs(ctx, dest, state, args)))
            return result
        part = dest + ".part"
        fetch = self._fetch_script(args, shlex.quote(part))
        install = install_script(part, dest, None)  # the part is private until now: the mode a new file (or dest) has
        prepare = f"{{ {prepare_part_script(part)}; }} >/dev/null || exit 1"  # never download through a planted symlink
        done = yield Change(command=f"{prepare}\n{fetch} || exit $?\n{finish_script(part, install, sha256=wanted)}",
                            timeout=24 * 3600, may_fail=True, reason=f"download {args['url']}")
        if not done.ran:  # check mode: the fields a download returns, as far as they are known before it
            return ModuleResult(data={**data, "checksum_dest": wanted, "size": None})
        verified = parse_verified(done.stdout)
        if done.rc != 0 or verified is None:
            reason = done.stderr.strip()[-1000:] or done.stdout.strip()[-1000:]
            hint = "" if done.rc == MISMATCH_RC else " (run the task again: the download resumes from the .part file)"
            return ModuleResult(failed=True, msg=f"download of {args['url']} failed: {reason}{hint}", data=data)
        after, _ = probe(ctx, dest)
        result = ModuleResult(data={**data, "checksum_dest": verified.sha256, "size": verified.size})
        result.failed = not (yield from set_attrs(dest, after, wanted_attrs(ctx, dest, after, args), diff=False))
        return result

    @staticmethod
    def _fetch_script(args: dict[str, Any], part: str) -> str:
        url = shlex.quote(args["url"])
        timeout = int(args["timeout"])
        curl = [f"curl -fsSL --retry 3 --connect-timeout {timeout} -C - -o {part}"]
        wget = [f"wget -q -c -T {timeout} -O {part}"]
        if not args["validate_certs"]:
            curl.append("-k")
            wget.append("--no-check-certificate")
        for key, value in (args.get("headers") or {}).items():
            curl.append(f"-H {shlex.quote(f'{key}: {value}')}")
            wget.append(f"--header={shlex.quote(f'{key}: {value}')}")
        if args.get("url_username"):
            # The password goes through a netrc-style config on stdin-free env var, not argv (ps would show it).
            curl.append("-u \"$GLMOPS_URL_AUTH\"")
            wget.append(f"--user={shlex.quote(args['url_username'])} --password=\"$GLMOPS_URL_PASSWORD\"")
        auth = ""
        if args.get("url_username"):
            auth = (f"GLMOPS_URL_AUTH={shlex.quote(args['url_username'] + ':' + (args.get('url_password') or ''))} "
                    f"GLMOPS_URL_PASSWORD={shlex.quote(args.get('url_password') or '')}; export GLMOPS_URL_AUTH GLMOPS_URL_PASSWORD; ")
        # curl exits 33 when the server ignores the range of a complete .part: start again once.
        return (f"{auth}if command -v curl >/dev/null 2>&1; then {' '.join(curl)} {url}; rc=$?; "
                f"if [ $rc -eq 33 ] || [ $rc -eq 36 ]; then rm -f {part}; {' '.join(curl)} {url}; rc=$?; fi; "
                f"else {' '.join(wget)} {url}; rc=$?; fi; [ $rc -eq 0 ] || {{ echo \"download failed (exit $rc)\" >&2; exit $rc; }}")


MODULE = GetUrlModule
