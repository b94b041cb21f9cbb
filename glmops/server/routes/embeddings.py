"""POST /v1/embeddings: normalised vectors, optionally shortened (`dimensions`) and base64-encoded."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from glmops.server.gate import APIError
from glmops.server.protocol import EmbeddingRequest, parse_embeddings
from glmops.server.routes.common import Body, Config, Service, parsed

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: Body, config: Config, service: Service) -> JSONResponse:
    embedding_request: EmbeddingRequest = parsed(parse_embeddings, body, config)
    if not config.embedding_model_path:
        raise APIError(404, "no embedding model is configured on this server (set embedding_model_path)", "not_found_error", "no_embedding_model")
    vectors, tokens = await service.embed(embedding_request)
    data = [{"object": "embedding", "index": index, "embedding": encoded(vector, embedding_request)} for index, vector in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": config.embedding_name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def encoded(vector: list[float], embedding_request: EmbeddingRequest) -> Any:
    """One vector as the request asks: cut to `dimensions` and normalised again, as a list or base64 floats."""
    if embedding_request.dimensions is not None:  # shortened and normalised again, as OpenAI's text-embedding-3 does
        vector = vector[: embedding_request.dimensions]
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        vector = [x / norm for x in vector]
    if embedding_request.encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
