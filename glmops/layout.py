"""Where a deploy puts things on a target, in one place for the deploy roles and the day-2 commands.

The roles' defaults (roles/*/defaults/main.yml) name the same paths; tests/test_layout.py checks
that they agree. A user moves everything with one variable, `deploy_dir`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_DEPLOY_DIR = "/opt/glmops"
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 6006


@dataclass(frozen=True)
class Layout:
    """The paths of one deployment on its target host."""

    deploy_dir: str = DEFAULT_DEPLOY_DIR
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT

    @classmethod
    def from_hostvars(cls, hostvars: Mapping[str, Any]) -> "Layout":
        """The layout a host's inventory variables describe (the defaults where they are silent)."""
        return cls(
            deploy_dir=str(hostvars.get("deploy_dir") or DEFAULT_DEPLOY_DIR),
            api_host=str(hostvars.get("api_host") or DEFAULT_API_HOST),
            api_port=int(hostvars.get("api_port") or DEFAULT_API_PORT),
        )

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.deploy_dir, *parts)

    @property
    def venv(self) -> str:
        return self._path("venv")

    @property
    def glmops(self) -> str:
        """The glmops command inside the target's venv (runs `glmops serve`)."""
        return self._path("venv", "bin", "glmops")

    @property
    def config(self) -> str:
        return self._path("api_server.yaml")

    @property
    def run_dir(self) -> str:
        """The server daemon's state: pid file, exit code."""
        return self._path("run")

    @property
    def pid_file(self) -> str:
        return self._path("run", "server.pid")

    @property
    def log_file(self) -> str:
        return self._path("logs", "server.log")

    @property
    def models_dir(self) -> str:
        return self._path("models")

    @property
    def health_url(self) -> str:
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}/health"
