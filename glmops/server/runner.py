"""Start uvicorn with the app, logging to the configured file (API keys never logged)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from glmops.server.config import ServerConfig

LOG_MODE = 0o600  # the log file: the server's user only (it names clients, paths and prompts' sizes)
ACCESS_LOGGER = "uvicorn.access"


def redact_query(path: str) -> str:
    """`path?a=1&api_key=sk-...` -> `path?a=***&api_key=***`: parameter names stay, no value does."""
    base, mark, query = path.partition("?")
    if not mark:
        return path
    names = [part.partition("=")[0] if "=" in part else "" for part in query.split("&")]
    return base + "?" + "&".join(f"{name}=***" if name else "***" for name in names)


class RedactQueryStrings(logging.Filter):
    """Uvicorn's access log lines with their query strings redacted (a key sent as ?api_key=... is never written)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact_query(record.args[2]), *record.args[3:])
        return True


class PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file is created, or tightened when it already exists, to LOG_MODE."""

    def _open(self) -> Any:
        stream = open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                      opener=lambda path, flags: os.open(path, flags, LOG_MODE))
        os.fchmod(stream.fileno(), LOG_MODE)
        return stream


def setup_logging(config: ServerConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file:
        os.makedirs(os.path.dirname(os.path.abspath(config.log_file)), exist_ok=True)
        handlers.append(PrivateFileHandler(config.log_file, encoding="utf-8"))
    for handler in handlers:
        handler.addFilter(RedactQueryStrings())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)


def run_server(config: ServerConfig) -> int:
    """Serve until stopped; the socket is bound before the model loads (/health says 503 meanwhile)."""
    import uvicorn

    from glmops.server.app import create_app
    from glmops.server.backends import get_backend

    setup_logging(config)
    log = logging.getLogger("glmops.server")
    log.info("serving %s (%s backend) on http://%s:%d; api keys: %s", config.served_model_name, config.backend, config.host,
             config.port, f"{len(config.api_keys)} configured" if config.api_keys else "none")
    app = create_app(config, get_backend(config))
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_config=None, access_log=True, timeout_graceful_shutdown=5))
    server.run()
    return 0
