"""The ``commands`` and ``audit`` sections of the agent config (pydantic models; see :mod:`edge.agent.audit`)."""

# pydantic evaluates annotations at run time: Optional keeps the models importable on Python 3.9.
# ruff: noqa: UP045
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from edge.agent.audit import action_allowed


class CommandsConfig(BaseModel):
    """Which command actions the agent executes."""

    model_config = ConfigDict(extra="forbid")

    disabled: list[str] = Field(
        default_factory=list,
        title="Disabled actions",
        description="actions refused with 'disabled', e.g. "
        '["bench", "model/set"]; \'*\' disables every action except ping',
    )

    def allows(self, action: str) -> bool:
        return action_allowed(self.disabled, action)


class AuditConfig(BaseModel):
    """Where the command audit log goes."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, title="Audit commands", description="record every command received")
    file: Optional[Path] = Field(
        None, title="Audit file", description="JSON-lines file; default <state_dir>/audit.jsonl"
    )
    publish: bool = Field(
        True,
        title="Publish audit records",
        description="also publish each record on <prefix>/<device>/audit (QoS 1)",
    )
    max_bytes: int = Field(
        5 * 1024 * 1024,
        ge=4096,
        title="Audit file size limit",
        description="the file is rotated to <file>.1 beyond this",
    )
