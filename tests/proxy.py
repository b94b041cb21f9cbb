"""A small HTTP proxy for tests (what AutoDL's network_turbo is to its containers): CONNECT tunnels and
plain forwarded requests, each one logged; hosts outside `allow` get 403.

    with LoggingProxy("127.0.0.1", allow={"pypi.org", "files.pythonhosted.org"}) as proxy:
        ... https_proxy=proxy.url ...
        proxy.log  # [("CONNECT", "pypi.org:443", 200), ...]
"""

from __future__ import annotations

import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until one side closes."""
    sockets = [a, b]
    while True:
        readable, _, broken = select.select(sockets, [], sockets, 300)
        if broken or not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


class LoggingProxy:
    """A threaded proxy on (host, port 0); `log` lists (method, target, status) of every request."""

    def __init__(self, host: str = "127.0.0.1", allow: set[str] | None = None):
        self.allow = allow  # None: every host
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_CONNECT(self) -> None:
                target_host, _, port = self.path.rpartition(":")
                if not proxy.allowed(target_host):
                    proxy.record("CONNECT", self.path, 403)
                    self.send_error(403, "not allowed by the test proxy")
                    return
                try:
                    upstream = socket.create_connection((target_host, int(port)), timeout=30)
                except OSError:
                    proxy.record("CONNECT", self.path, 502)
                    self.send_error(502, "upstream unreachable")
                    return
                proxy.record("CONNECT", self.path, 200)
                self.send_response(200, "Connection established")
                self.end_headers()
                with upstream:
                    _relay(self.connection, upstream)
                self.close_connection = True

            def _forward(self) -> None:
                url = urlsplit(self.path)
                if not url.hostname or not proxy.allowed(url.hostname):
                    proxy.record(self.command, self.path, 403)
                    self.send_error(403, "not allowed by the test proxy")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = url.path + (f"?{url.query}" if url.query else "")
                head = [f"{self.command} {path or '/'} HTTP/1.0"] + [f"{k}: {v}" for k, v in self.headers.items()
                                                                     if k.lower() not in ("proxy-connection", "connection")]
                try:
                    upstream = socket.create_connection((url.hostname, url.port or 80), timeout=30)
                except OSError:
                    proxy.record(self.command, self.path, 502)
                    self.send_error(502, "upstream unreachable")
                    return
                proxy.record(self.command, self.path, 200)
                with upstream:
                    upstream.sendall(("\r\n".join(head + ["Connection: close", "", ""])).encode() + body)
                    while chunk := upstream.recv(65536):
                        self.wfile.write(chunk)
                self.close_connection = True

            do_GET = do_POST = do_HEAD = do_PUT = _forward

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def allowed(self, host: str) -> bool:
        return self.allow is None or host in self.allow

    def record(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.log.append((method, target, status))

    def start(self) -> "LoggingProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LoggingProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
