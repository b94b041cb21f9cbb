"""A loopback stand-in for the Hugging Face Hub and ModelScope: the file APIs their clients call, serving a tiny model.

Not a mock of the clients: the real `huggingface_hub` and `modelscope` packages talk HTTP to it.
Endpoints (read from the clients' source):
- Hugging Face: GET /api/models/{repo}[/revision/{rev}] (model info, `siblings` with sizes and LFS
  sha256 when ?blobs=true), HEAD/GET /{repo}/resolve/{rev}/{path} (X-Repo-Commit, ETag,
  X-Linked-Size, Range).
- ModelScope: GET /api/v1/models/{repo}/repo/files?Revision=&Recursive= (file list with Size and
  Sha256), GET /api/v1/models/{repo}/repo?Revision=&FilePath= (content, Range), the repo info and
  revisions calls, all in its {"Code": 200, "Data": ..., "Success": true} envelope.
`truncate` makes the server cut a file's body short once (a dropped connection), to test resumes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    """Serves `files` (path -> bytes) of one repository `repo` under both hubs' APIs."""

    def __init__(self, repo: str, files: dict[str, bytes], lfs: tuple[str, ...] = (".safetensors", ".bin"), host: str = "127.0.0.1"):
        self.repo, self.files, self.lfs = repo, files, lfs
        self.requests: list[str] = []
        self.sent: dict[str, int] = {}  # file path -> body bytes sent
        self.unknown: list[str] = []
        self.hold: str | None = None  # a file whose body stops half way until `release` is set
        self.holding = threading.Event()  # set once the held file's first half went out
        self.release = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def send_json(self, data: Any, status: int = 200) -> None:
                self.send(status, json.dumps(data).encode())

            def send_file(self, path: str, headers: dict[str, str]) -> None:
                data = hub.files[path]
                start = 0
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes="):
                    start = int(ranged[6:].split("-")[0] or 0)
                    if start >= len(data) and data:
                        self.send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
                        return
                body = data[start:]
                status = 206 if ranged else 200
                if ranged:
                    headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if path == hub.hold and not hub.release.is_set():
                    half = len(body) // 2
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    hub.sent[path] = hub.sent.get(path, 0) + half
                    hub.holding.set()
                    hub.release.wait(120)
                    body = body[half:]
                self.wfile.write(body)
                hub.sent[path] = hub.sent.get(path, 0) + len(body)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                path = unquote(url.path)
                hub.requests.append(f"{self.command} {self.path}")
                if not hub.route(self, path, query):
                    hub.unknown.append(f"{self.command} {self.path}")
                    self.send(404, b'{"error": "not found"}')

            do_HEAD = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- helpers ------------------------------------------------------------------------------
    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(self.lfs)

    def git_oid(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def route(self, handler: Any, path: str, query: dict[str, str]) -> bool:
        repo = self.repo
        # -- Hugging Face ------------------------------------------------------------------
        if path in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main", f"/api/models/{repo}/revision/{COMMIT}"):
            siblings = []
            for name in sorted(self.files):
                entry: dict[str, Any] = {"rfilename": name}
                if query.get("blobs"):
                    entry.update(size=len(self.files[name]), blobId=self.git_oid(name))
                    if self.is_lfs(name):
                        entry["lfs"] = {"sha256": self.sha256(name), "size": len(self.files[name]), "pointerSize": 134}
                siblings.append(entry)
            handler.send_json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings})
            return True
        prefix = f"/{repo}/resolve/"
        if path.startswith(prefix):
            revision, _, name = path[len(prefix):].partition("/")
            if revision not in ("main", COMMIT) or name not in self.files:
                return False
            etag = self.sha256(name) if self.is_lfs(name) else self.git_oid(name)
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}
            if self.is_lfs(name):
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(self.files[name]))})
            handler.send_file(name, headers)
            return True
        # -- ModelScope --------------------------------------------------------------------
        base = f"/api/v1/models/{repo}"
        if path == f"{base}/repo/files":
            files = [{"Path": name, "Name": name.rsplit("/", 1)[-1], "Type": "blob", "Size": len(data),
                      "Sha256": self.sha256(name), "Revision": COMMIT, "IsLFS": self.is_lfs(name)}
                     for name, data in sorted(self.files.items())]
            handler.send_json({"Code": 200, "Data": {"Files": files}, "Success": True, "Message": "success"})
            return True
        if path == f"{base}/repo" and query.get("FilePath") in self.files:
            handler.send_file(query["FilePath"], {})
            return True
        if path == f"{base}/revisions":
            handler.send_json({"Code": 200, "Success": True, "Data": {"RevisionMap": {
                "Branches": [{"Revision": "master", "CreatedAt": 1700000000}], "Tags": []}}})
            return True
        if path == "/api/v1/repos/internalAccelerationInfo":  # the client's region probe: not inside a cloud region
            handler.send_json({"Code": 200, "Success": True, "Data": {"InternalRegionQueryAddress": ""}})
            return True
        if path == base:
            handler.send_json({"Code": 200, "Success": True, "Data": {"Name": repo.split("/")[1], "Path": repo.split("/")[0],
                                                                      "Revision": "master"}})
            return True
        return False

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
