"""uri: make an HTTP request from the host (so services bound to its 127.0.0.1 are reachable)."""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import urlencode

from glmops.modules.base import Arg, Module, ModuleContext, ModuleResult

MARK = "__glmops_http_status="


class UriModule(Module):
    name = "uri"
    doc = (
        "Send an HTTP request with curl on the host and check the status. Runs on the target, so it "
        "reaches services bound to the host's own 127.0.0.1 (the API server's health check). Returns "
        "`status`, `json` when the response is JSON, `content` with `return_content`. Never changed "
        "(use changed_when for requests that change something)."
    )
    args = {
        "url": Arg("str", required=True, word=True, help="The URL."),
        "method": Arg("str", default="GET", word=True, help="HTTP method."),
        "body": Arg("raw", help="Request body (a mapping or list is sent as JSON with body_format: json)."),
        "body_format": Arg("str", default="raw", choices=("raw", "json", "form-urlencoded"), help="How to encode body."),
        "headers": Arg("dict", default=None, help="Request headers."),
        "status_code": Arg("list", elements="int", default=[200], help="Status codes that count as success."),
        "return_content": Arg("bool", default=False, help="Return the response body as `content`."),
        "timeout": Arg("int", default=30, help="Seconds for the whole request."),
        "validate_certs": Arg("bool", default=True, help="Verify TLS certificates."),
        "follow_redirects": Arg("str", default="safe", choices=("all", "safe", "none", "yes", "no"), help="Follow redirects."),
        "url_username": Arg("str", aliases=("user",), help="HTTP basic auth user."),
        "url_password": Arg("str", aliases=("password",), no_log=True, help="HTTP basic auth password (never shown)."),
    }

    def run(self, ctx: ModuleContext, args: dict[str, Any]) -> ModuleResult:
        headers = dict(args.get("headers") or {})
        body = args.get("body")
        if body is not None:
            if args["body_format"] == "json":
                body = body if isinstance(body, str) else json.dumps(body)
                headers.setdefault("Content-Type", "application/json")
            elif args["body_format"] == "form-urlencoded":
                body = body if isinstance(body, str) else urlencode(body)
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            else:
                body = str(body)
        command = ["curl", "-sS", "-X", args["method"].upper(), "--max-time", str(int(args["timeout"])),
                   "-o", "-", "-w", f"\\n{MARK}%{{http_code}}"]
        if args["follow_redirects"] in ("all", "safe", "yes"):
            command.append("-L")
        if not args["validate_certs"]:
            command.append("-k")
        for key, value in headers.items():
            command += ["-H", f"{key}: {value}"]
        if body is not None:
            command += ["--data-binary", "@-"]
        env_auth = ""
        if args.get("url_username"):
            command += ["-u", "GLMOPS_AUTH_PLACEHOLDER"]
            env_auth = f"GLMOPS_URL_AUTH={shlex.quote(args['url_username'] + ':' + (args.get('url_password') or ''))}; "
        script = env_auth + " ".join(shlex.quote(w) for w in command).replace(shlex.quote("GLMOPS_AUTH_PLACEHOLDER"), '"$GLMOPS_URL_AUTH"')
        script += " " + shlex.quote(args["url"])
        done = ctx.run(script, stdin=body.encode() if body is not None else None, timeout=args["timeout"] + 10)
        text, _, status_text = done.stdout.rpartition(f"\n{MARK}")
        status = int(status_text.strip()) if status_text.strip().isdigit() else -1
        data: dict[str, Any] = {"status": status, "url": args["url"]}
        if done.rc != 0 and status <= 0:
            return ModuleResult(failed=True, msg=f"request to {args['url']} failed: {done.stderr.strip()}", data=data)
        try:
            data["json"] = json.loads(text)
        except ValueError:
            pass
        if args["return_content"]:
            data["content"] = text
        if status not in args["status_code"]:
            expected = ", ".join(map(str, args["status_code"]))
            return ModuleResult(failed=True, msg=f"status code was {status} and not [{expected}]: {text[:500]}", data=data)
        return ModuleResult(data=data)


MODULE = UriModule
