"""The OpenAI-compatible ChatGLM3 API server deployed on targets (`glmops serve`).

Routes (routes/, one per endpoint family) and the generation service (service.py) are separate from
backends (backends/); the ChatGLM3 prompt format (prompt.py) and tool-call parsing (toolcall.py) are
pure functions. Heavy imports (torch, transformers, fastapi) happen only when the server starts, never
on the controller's path.
"""
