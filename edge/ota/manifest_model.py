"""The signed update manifest as a pydantic model (see :mod:`edge.ota.manifest`).

Imported when an update is built or arrives, not when the agent starts: pydantic stays out of its process.
"""

# pydantic evaluates annotations at run time: Optional keeps the models importable on Python 3.9.
# ruff: noqa: UP045
from __future__ import annotations

import json
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from edge.ota.manifest import FORMAT


class Manifest(BaseModel):
    """What the signature vouches for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(FORMAT, description="manifest format, for future changes")
    version: str = Field(
        ..., min_length=1, max_length=128, description="model version, free text (e.g. 1.4.0)"
    )
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the model bytes")
    size: int = Field(..., ge=0, description="model size in bytes")
    labels_sha256: Optional[str] = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the labels file"
    )
    labels_size: int = Field(0, ge=0, description="labels size in bytes (0 = no labels)")
    device: Optional[str] = Field(None, max_length=256, description="target device id; null = any device")
    key_id: str = Field(..., min_length=1, max_length=64, description="fingerprint of the signing public key")
    created: str = Field(
        ...,
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$",
        description="UTC time of signing (ISO 8601, Z); later updates must be signed later",
    )

    def canonical(self) -> bytes:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":")).encode()
