"""The ``ota`` section of the agent config (a pydantic model; see :mod:`edge.ota.handler`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.model.guard_limits import GuardLimits
from edge.ota.manifest import DEFAULT_MAX_BYTES


class OtaConfig(BaseModel):
    """The ``ota`` section of the agent config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, title="Accept updates", description="accept model updates on <prefix>/<device>/model/set"
    )
    public_keys: list[str] = Field(
        default_factory=list,
        title="Trusted update keys",
        description="Ed25519 public keys trusted for updates: "
        ".pub file paths, PEM or base64 text. Empty: every update is refused",
    )
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES, gt=0, title="Update size limit", description="largest model accepted over the air"
    )
    max_pending_bytes: int = Field(
        2 * DEFAULT_MAX_BYTES,
        gt=0,
        title="Queued updates limit",
        description="updates waiting to be installed, in bytes; beyond: refused as busy",
    )
    guard: GuardLimits = Field(
        default_factory=GuardLimits,
        title="Health check limits",
        description="limits of the model health check",
    )
