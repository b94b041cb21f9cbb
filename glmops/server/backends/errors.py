"""The error every backend raises for a problem the user can fix; below base.py and the embedding model."""

from __future__ import annotations


class BackendError(Exception):
    """A problem the user can fix (missing package, wrong file, unsupported option)."""
