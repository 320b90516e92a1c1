"""The limits of the model guard (:mod:`edge.model.guard`) as a pydantic model: the ``ota.guard`` config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MB = 1 << 20


class GuardLimits(BaseModel):
    """What a model may ask for before it is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(64 * MB, gt=0, title="Model size limit", description="largest model file accepted")
    max_tensor_bytes: int = Field(
        256 * MB, gt=0, title="Tensor size limit", description="largest single tensor (shape x item size)"
    )
    max_activation_bytes: int = Field(
        512 * MB,
        gt=0,
        title="Activation memory limit",
        description="sum of non-constant tensors (a lower bound of the arena)",
    )
    memory_mb: int = Field(
        1024,
        ge=0,
        title="Child memory limit",
        description="address space the child may add above its baseline "
        "after importing the runtime (RLIMIT_AS); 0 = no limit",
    )
    cpu_s: float = Field(
        30.0,
        gt=0,
        title="Child CPU limit",
        description="CPU seconds for load + allocate + test inference (RLIMIT_CPU)",
    )
    timeout_s: float = Field(
        60.0, gt=0, title="Check timeout", description="wall-clock seconds before the child is killed"
    )
    start_timeout_s: float = Field(
        60.0,
        gt=0,
        title="Child start timeout",
        description="seconds the child may take to import the runtime",
    )
    runtime: str = Field(
        "auto", title="Check runtime", description="TFLite runtime the child uses (see edge.model.runtime)"
    )
    threads: int = Field(1, ge=1, title="Check threads", description="interpreter threads in the child")
