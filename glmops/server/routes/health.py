"""GET /health: loading state, the backend's info, and the service's counters."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from glmops.server.routes.common import Config, Service

router = APIRouter()


@router.get("/health")
async def health(config: Config, service: Service) -> JSONResponse:
    body: dict[str, Any] = {
        "status": service.status,
        "model": config.served_model_name,
        "backend": config.backend,
        "uptime_s": round(time.time() - service.started, 1),
        "embeddings": bool(config.embedding_model_path),
        **service.backend.info(),
    }
    if service.load_error:
        body["error"] = service.load_error
    body.update(service.stats)
    gate = service.gate
    assert gate is not None, "the service was not started"
    body.update({"running": gate.running, "waiting": gate.waiting})
    return JSONResponse(body, status_code=200 if service.loaded.is_set() else 503)
