"""Renderers of run events (rich console, JSON lines) and the redaction every event passes through."""
