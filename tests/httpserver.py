"""A small HTTP server on 127.0.0.1 for tests: files with Range support, JSON, status codes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHTTPServer:
    """Serves `files` (path -> bytes); records each request's path and Range header."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/octet-stream", extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append({"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                                        "headers": dict(self.headers), "body": body})
                if self.path.startswith("/status/"):
                    code = int(self.path.rsplit("/", 1)[1])
                    self._send(code, json.dumps({"status": code}).encode(), "application/json")
                elif self.path == "/echo":
                    self._send(200, json.dumps({"method": self.command, "body": body.decode(), "auth": self.headers.get("Authorization")}).encode(), "application/json")
                elif self.path in server.files:
                    data = server.files[self.path]
                    ranged = self.headers.get("Range")
                    if ranged and ranged.startswith("bytes="):
                        start = int(ranged[6:].split("-")[0])
                        if start >= len(data):
                            self._send(416, b"", extra={"Content-Range": f"bytes */{len(data)}"})
                            return
                        self._send(206, data[start:], extra={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                    else:
                        self._send(200, data)
                else:
                    self._send(404, b"not found", "text/plain")

            do_POST = do_GET  # noqa: N815
            do_PUT = do_GET  # noqa: N815
            do_HEAD = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LoopbackHTTPServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
