"""Start uvicorn with the app, logging to the configured file (API keys never logged)."""

from __future__ import annotations

import logging
import os
import sys

from glmops.server.config import ServerConfig


def setup_logging(config: ServerConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file:
        os.makedirs(os.path.dirname(os.path.abspath(config.log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(config.log_file, encoding="utf-8"))
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
