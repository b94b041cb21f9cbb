"""GET /v1/models and /v1/models/{id}: the served chat model and the embedding model, with their aliases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from glmops.server.config import ServerConfig
from glmops.server.gate import APIError
from glmops.server.protocol import model_matches
from glmops.server.routes.common import Config, Service

router = APIRouter()


def model_cards(config: ServerConfig) -> list[tuple[str, list[str]]]:
    """(name, alias patterns) of each model served: the chat model, then the embedding model if configured."""
    cards = [(config.served_model_name, config.model_aliases)]
    if config.embedding_model_path:
        cards.append((config.embedding_name, config.embedding_model_aliases))
    return cards


def model_card(name: str, root: str, created: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": "glmops", "root": root}


@router.get("/v1/models")
async def models(config: Config, service: Service) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(name, name, service.started) for name, _ in model_cards(config)]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, config: Config, service: Service) -> dict[str, Any]:
    cards = model_cards(config)
    for name, aliases in cards:
        if model_matches(model_id, name, aliases):
            return model_card(model_id, name, service.started)
    raise APIError(404, f"The model '{model_id}' does not exist: this server serves {', '.join(n for n, _ in cards)}",
                   param="model", code="model_not_found")
