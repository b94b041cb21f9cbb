"""`glmops chat [HOST] "prompt"`: one chat request to a deployed server, the answer printed as it streams.

Where the request goes, first match wins:
1. --base-url URL (e.g. http://127.0.0.1:6006/v1);
2. HOST given: an open `glmops tunnel` to it (its local port); else a forward opened for this one
   request over the host's SSH connection (a direct-tcpip channel to api_host:api_port), or the port
   itself for a local host;
3. no HOST: the one open tunnel, else http://127.0.0.1:6006/v1.
Plain http.client from the standard library (no openai package, never through an HTTP proxy).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import click

from glmops.commands._hosts import Target, connect, inventory_option, load_targets, run_command
from glmops.commands.complete import complete_first_host
from glmops.errors import ConnectionFailure, GlmopsError

DEFAULT_BASE_URL = "http://127.0.0.1:6006/v1"
CONNECT_TIMEOUT = 10.0  # seconds to reach the server (at most --timeout)
DEFAULT_TIMEOUT = 60.0  # --timeout: seconds for the answer to begin, and between two parts of a stream


@dataclass
class Endpoint:
    """Where the request goes and how to open the HTTP connection to it."""

    url: str  # the base URL, for messages (ends with /v1)
    open: Callable[[float], http.client.HTTPConnection]  # connected within that many seconds
    close: Callable[[], None] = lambda: None
    hint: str = ""
    # how the request travels, for errors that say what is wrong: "url" (--base-url), "default" (no HOST,
    # no tunnel: 127.0.0.1:6006), "tunnel" (an open `glmops tunnel`), "ssh" (a forward over the host's SSH),
    # "local" (a host with connection: local: its port on this machine)
    route: str = "url"
    host: str | None = None
    tunnel: dict[str, Any] | None = None


def normalize_base(url: str) -> str:
    """http://h:p, http://h:p/ and http://h:p/v1 -> http://h:p/v1 (the guide's .env often forgets /v1)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GlmopsError(f"--base-url {url!r} is not an http(s) URL", field="--base-url", hint="e.g. http://127.0.0.1:6006/v1")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def url_endpoint(base: str, hint: str = "", **route: Any) -> Endpoint:
    parts = urlsplit(base)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection

    def open_connection(connect_timeout: float) -> http.client.HTTPConnection:
        conn = kind(parts.hostname, parts.port, timeout=connect_timeout)  # type: ignore[arg-type]
        conn.connect()
        return conn

    return Endpoint(base, open_connection, hint=hint, **route)


def open_tunnels() -> list[dict[str, Any]]:
    """Live `glmops tunnel --background` tunnels (none when the tunnel command is not installed)."""
    try:
        from glmops.commands import tunnel as tunnel_command  # noqa: PLC0415
    except ImportError:
        return []
    states = getattr(tunnel_command, "read_states", lambda: [])()
    is_ours = getattr(tunnel_command, "_is_our_tunnel", None)
    live = []
    for state in states:
        try:
            if is_ours is None or is_ours(state):
                live.append(state)
        except (KeyError, TypeError, ValueError, OSError):
            continue
    return live


def _tunnel_url(state: dict[str, Any]) -> str:
    if state.get("url"):
        return normalize_base(str(state["url"]))
    return normalize_base(f"http://127.0.0.1:{state.get('local_port', 6006)}")


def host_endpoint(target: Target, accept_new: bool) -> Endpoint:
    """An open tunnel to the host, else a forward over its SSH connection for this one request."""
    for state in open_tunnels():
        if state.get("host") == target.name:
            return url_endpoint(_tunnel_url(state), hint=f"the tunnel to {target.name}", route="tunnel", host=target.name, tunnel=state)
    layout = target.layout
    remote_host = "127.0.0.1" if layout.api_host in ("0.0.0.0", "::", "") else layout.api_host
    conn = connect(target, accept_new)
    transport = getattr(conn, "transport", None)
    if transport is None:  # a local host: the port is right here
        conn.close()
        return url_endpoint(normalize_base(f"http://{remote_host}:{layout.api_port}"), route="local", host=target.name)

    def open_channel(connect_timeout: float) -> http.client.HTTPConnection:
        import paramiko

        try:
            channel = transport.open_channel("direct-tcpip", (remote_host, layout.api_port), ("127.0.0.1", 0), timeout=connect_timeout)
        except (paramiko.ChannelException, paramiko.SSHException, OSError) as exc:
            raise ConnectionRefusedError(str(exc)) from None
        http_conn = http.client.HTTPConnection(remote_host, layout.api_port, timeout=connect_timeout)
        http_conn.sock = _ChannelSocket(channel)  # type: ignore[assignment]
        return http_conn

    url = f"http://{remote_host}:{layout.api_port}/v1 on {target.name} (over SSH)"
    return Endpoint(url, open_channel, close=conn.close, route="ssh", host=target.name)


class _ChannelRaw(io.RawIOBase):
    """An SSH channel as a raw byte stream, for a BufferedReader."""

    def __init__(self, channel: Any):
        self.channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.channel.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ChannelSocket:
    """Just enough of a socket for http.client: sendall, makefile, close."""

    def __init__(self, channel: Any):
        self.channel = channel

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def settimeout(self, seconds: float | None) -> None:
        self.channel.settimeout(seconds)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_ChannelRaw(self.channel))

    def close(self) -> None:
        self.channel.close()


def build_request(prompt: str, *, system: str | None, max_tokens: int | None, stream: bool, model: str | None,
                  temperature: float | None) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"messages": messages, "stream": stream}
    if model:
        body["model"] = model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _error_text(status: int, raw: bytes) -> str:
    try:
        error = json.loads(raw).get("error") or {}
        return str(error.get("message") or error) if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:300] or f"HTTP {status}"


def _silent(endpoint: Endpoint, what: str, timeout: float) -> GlmopsError:
    """The error for a server that took the connection but did not answer in time."""
    return GlmopsError(f"{endpoint.url} {what} within {timeout:g} s",
                       hint="is the server hung or still loading the model? see `glmops status HOST` and `glmops logs HOST`; "
                            "a long answer without --stream may need a larger --timeout")


def send(endpoint: Endpoint, body: dict[str, Any], api_key: str | None, on_text: Callable[[str], None],
         timeout: float = DEFAULT_TIMEOUT, key_source: str = "--api-key") -> dict[str, Any]:
    """POST /chat/completions; streamed text goes to on_text. Returns {model, content, finish_reason, usage}.

    The connection must be made within CONNECT_TIMEOUT seconds (or `timeout`, when shorter), the answer
    must begin within `timeout` seconds, and a stream may not pause longer than that. The errors tell
    apart no tunnel, a server that is down, and a wrong key (`key_source` says where the key came from)."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if body.get("stream") else "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    path = urlsplit(endpoint.url.split(" ")[0]).path.rstrip("/") + "/chat/completions"
    connect_timeout = min(CONNECT_TIMEOUT, timeout)
    try:
        conn = endpoint.open(connect_timeout)
    except TimeoutError:
        raise GlmopsError(f"cannot connect to {endpoint.url} within {connect_timeout:g} s",
                          hint=endpoint.hint or "is the host up? is a tunnel open (glmops tunnel HOST)?") from None
    except (ConnectionRefusedError, ConnectionResetError, OSError) as exc:
        raise _not_reached(endpoint, exc) from None
    try:
        conn.sock.settimeout(timeout)
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        response = conn.getresponse()
    except TimeoutError:
        conn.close()
        raise _silent(endpoint, "took the connection but sent no answer", timeout) from None
    except (ConnectionResetError, OSError, http.client.HTTPException) as exc:
        conn.close()
        raise _closed(endpoint, exc) from None
    try:
        return _read_answer(body, response, on_text, key_source if api_key else None)
    except TimeoutError:
        raise _silent(endpoint, "began to answer, then sent nothing more", timeout) from None
    finally:
        conn.close()


def _server_down_hint(host: str | None) -> str:
    name = host or "HOST"
    return f"see why: glmops status {name}, glmops logs {name}; start it again: glmops restart {name}"


def _not_reached(endpoint: Endpoint, exc: BaseException) -> GlmopsError:
    """Nothing took the connection: no tunnel (the default URL), a dead tunnel, a server that is down
    (over SSH), or nothing at --base-url."""
    if endpoint.route == "default":
        return GlmopsError(f"no tunnel: no glmops tunnel is open and nothing listens at {endpoint.url} ({exc})",
                           hint="open one: glmops tunnel open HOST --background (then glmops chat \"...\"), "
                                "or ask through the host's SSH: glmops chat HOST \"...\"" + (f"; {endpoint.hint}" if endpoint.hint else ""))
    if endpoint.route == "tunnel":
        pid = (endpoint.tunnel or {}).get("pid")
        return GlmopsError(f"the tunnel to {endpoint.host} (pid {pid}) does not take connections at {endpoint.url} ({exc})",
                           hint=f"see it: glmops tunnel status; open it again: glmops tunnel stop {endpoint.host} && "
                                f"glmops tunnel open {endpoint.host} --background")
    if endpoint.route in ("ssh", "local"):
        how = f"the SSH connection to {endpoint.host} works" if endpoint.route == "ssh" else f"{endpoint.host} is this machine"
        return GlmopsError(f"server down: nothing answers at {endpoint.url} ({how}): {exc}", hint=_server_down_hint(endpoint.host))
    return GlmopsError(f"nothing answers at {endpoint.url}: {exc}",
                       hint=endpoint.hint or "is the server running (glmops status HOST)? is a tunnel open (glmops tunnel status)?")


def _closed(endpoint: Endpoint, exc: BaseException) -> GlmopsError:
    """Something took the connection and closed it without an answer: a tunnel whose server is down."""
    if endpoint.route == "tunnel":
        state = endpoint.tunnel or {}
        behind = f"{state.get('remote_host', '127.0.0.1')}:{state.get('remote_port', '?')} on {endpoint.host}"
        return GlmopsError(f"server down: the tunnel to {endpoint.host} is open ({endpoint.url}), but nothing answers behind it "
                           f"at {behind}", hint=_server_down_hint(endpoint.host))
    if endpoint.route in ("ssh", "local"):
        return _not_reached(endpoint, exc)
    return GlmopsError(f"{endpoint.url} took the connection and closed it without an answer ({exc or type(exc).__name__}): "
                       "a tunnel whose server is down?",
                       hint=f"{_server_down_hint(endpoint.host)}; the tunnels: glmops tunnel status")


def _read_answer(body: dict[str, Any], response: http.client.HTTPResponse, on_text: Callable[[str], None],
                 key_source: str | None = None) -> dict[str, Any]:
    """The answer of a response that began: the error it carries, the JSON body, or the stream's parts.
    `key_source`: where the key sent came from (None: no key was sent)."""
    if response.status != 200:
        text = _error_text(response.status, response.read())
        if response.status == 401:
            raise _key_error(text, key_source)
        hint = "the model is still loading: try again, or watch `glmops status HOST`" if response.status == 503 else None
        raise GlmopsError(f"the server answered HTTP {response.status}: {text}", hint=hint)
    if not body.get("stream"):
        data = json.loads(response.read())
        choice = (data.get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content") or ""
        on_text(content)
        return {"model": data.get("model"), "content": content, "finish_reason": choice.get("finish_reason"), "usage": data.get("usage")}
    return _read_stream(response, on_text)


def _key_error(text: str, key_source: str | None) -> GlmopsError:
    """HTTP 401: a wrong key (one was sent), or a key that is needed and was not sent."""
    if key_source is None:
        return GlmopsError(f"no key: the server wants an API key and none was sent (HTTP 401: {text})",
                           hint="give --api-key KEY (or $GLMOPS_API_KEY), or name the HOST whose inventory has api_keys")
    return GlmopsError(f"wrong key: the server refused the API key from {key_source} (HTTP 401: {text})",
                       hint="send one of the api_keys the server was deployed with (the host's inventory; "
                            "`glmops chat HOST` sends api_keys[0]): --api-key KEY or $GLMOPS_API_KEY")


def _read_stream(response: http.client.HTTPResponse, on_text: Callable[[str], None]) -> dict[str, Any]:
    """The parts of a server-sent-event stream, each given to on_text as it arrives."""
    parts: list[str] = []
    result: dict[str, Any] = {"model": None, "finish_reason": None, "usage": None}
    while True:
        line = response.readline()
        if not line:
            break
        text = line.decode(errors="replace").strip()
        if not text.startswith("data:"):
            continue
        payload = text[5:].strip()
        if payload == "[DONE]":
            break
        chunk = json.loads(payload)
        if chunk.get("error"):
            raise GlmopsError(f"the server ended the stream with an error: {_error_text(500, payload.encode())}")
        result["model"] = chunk.get("model") or result["model"]
        result["usage"] = chunk.get("usage") or result["usage"]
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                parts.append(delta)
                on_text(delta)
            result["finish_reason"] = choice.get("finish_reason") or result["finish_reason"]
    result["content"] = "".join(parts)
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("words", nargs=-1, required=True, metavar="[HOST] PROMPT", shell_complete=complete_first_host)
@inventory_option
@click.option("--stream", is_flag=True, help="Print the answer as it is generated.")
@click.option("-s", "--system", help="A system message.")
@click.option("--max-tokens", type=click.IntRange(1), help="Longest answer, in tokens.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature.")
@click.option("--model", help="The model name to send (default: the server's).")
@click.option("--base-url", help="Send to this URL instead (e.g. http://127.0.0.1:6006/v1).")
@click.option("--api-key", envvar="GLMOPS_API_KEY", help="API key (default: $GLMOPS_API_KEY, else the host's api_keys[0]).")
@click.option("--timeout", type=click.FloatRange(0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help=f"Seconds for the answer to begin (and, with --stream, between two of its parts); connecting may take {CONNECT_TIMEOUT:g} s at most.")
@click.option("--json", "as_json", is_flag=True, help="Print {host, url, model, content, finish_reason, usage} instead of the text.")
def chat(words: tuple[str, ...], inventories: tuple[str, ...], extra_vars: tuple[str, ...], accept_new: bool, stream: bool,
         system: str | None, max_tokens: int | None, temperature: float | None, model: str | None, base_url: str | None,
         api_key: str | None, timeout: float, as_json: bool) -> None:
    """Ask the deployed model one question: the quick proof that a deploy works.

    \b
      glmops chat autodl "你好，给我讲一个故事，大概100字" --stream
      glmops chat "hello" --base-url http://127.0.0.1:6006/v1
    """

    def body() -> int:
        if len(words) > 2:
            raise GlmopsError(f"expected [HOST] PROMPT, got {len(words)} words", field="PROMPT",
                              hint="quote the prompt: glmops chat HOST \"your question\"")
        host, prompt = (words[0], words[1]) if len(words) == 2 else (None, words[0])
        if not prompt.strip():
            raise GlmopsError("the prompt is empty", field="PROMPT")
        key = api_key
        key_source = _key_source(api_key)
        endpoint: Endpoint
        if base_url:
            endpoint = url_endpoint(normalize_base(base_url), host=host)
            if host and not key:
                key, key_source = _host_key(load_targets(host, inventories, extra_vars, single=True)[0])
        elif host:
            target = load_targets(host, inventories, extra_vars, single=True)[0]
            if not key:
                key, key_source = _host_key(target)
            try:
                endpoint = host_endpoint(target, accept_new)
            except ConnectionFailure as exc:
                raise GlmopsError(f"{target.name}: cannot connect: {exc.message}", hint=exc.hint) from None
        else:
            tunnels = open_tunnels()
            if len(tunnels) == 1:
                endpoint = url_endpoint(_tunnel_url(tunnels[0]), route="tunnel", host=tunnels[0].get("host"), tunnel=tunnels[0])
            else:
                several = f"{len(tunnels)} tunnels are open ({', '.join(str(t.get('host')) for t in tunnels)}): name the HOST" if tunnels else ""
                endpoint = url_endpoint(DEFAULT_BASE_URL, hint=several, route="default")
        request = build_request(prompt, system=system, max_tokens=max_tokens, stream=stream, model=model, temperature=temperature)

        def show(text: str) -> None:
            if not as_json:
                sys.stdout.write(text)
                sys.stdout.flush()

        try:
            result = send(endpoint, request, key, show, timeout=timeout, key_source=key_source)
        finally:
            endpoint.close()
        if as_json:
            click.echo(json.dumps({"host": host, "url": endpoint.url, **result}, ensure_ascii=False, indent=2))
        else:
            sys.stdout.write("\n")
        return 0

    run_command(body, as_json=as_json)


def _key_source(api_key: str | None) -> str:
    """Where --api-key's value came from: the option, or $GLMOPS_API_KEY."""
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    source = context.get_parameter_source("api_key") if context is not None and api_key else None
    return "$GLMOPS_API_KEY" if source == ParameterSource.ENVIRONMENT else "--api-key"


def _host_key(target: Target) -> tuple[str | None, str]:
    """The key to send to `target` and where it came from: its api_keys[0], else $GLMOPS_API_KEY."""
    keys = target.var("api_keys")
    if isinstance(keys, str):
        keys = [k.strip() for k in keys.split(",") if k.strip()]
    if keys:
        return str(keys[0]), f"the api_keys[0] of {target.name} in the inventory"
    return os.environ.get("GLMOPS_API_KEY") or None, "$GLMOPS_API_KEY"
