"""The converter's user-facing error: what was wrong and what to do (exit code 2)."""

from __future__ import annotations

from edge.errors import EdgeError


class ConvertError(EdgeError):
    """Bad input to edge-convert: a model, data set or option it cannot use."""
