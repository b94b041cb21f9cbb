"""The HTTP routes, one router per endpoint family; each parses with protocol.py, asks the service, formats the answer."""

from __future__ import annotations

from fastapi import APIRouter

from glmops.server.routes import chat, completions, embeddings, health, models

ROUTERS: tuple[APIRouter, ...] = (health.router, models.router, chat.router, completions.router, embeddings.router)
