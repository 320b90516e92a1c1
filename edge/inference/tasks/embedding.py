"""An embedding (feature vector) output -> its size, norm and first values; the full vector on request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PREVIEW = 8  # values shown when the full vector is not asked for


@dataclass(frozen=True)
class Embedding:
    dim: int
    norm: float  # L2 norm of the real-valued vector
    values: tuple[float, ...]  # the first PREVIEW values, or all of them
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "norm": round(self.norm, 6),
            "values": [round(v, 6) for v in self.values],
            "truncated": not self.complete,
        }


def embedding(output: np.ndarray, full: bool = False, preview: int = PREVIEW) -> Embedding:
    """``output``: the de-quantized vector (any shape; flattened)."""
    vec = np.asarray(output, dtype=np.float32).reshape(-1)
    n = vec.size if full else min(preview, vec.size)
    return Embedding(
        int(vec.size), float(np.linalg.norm(vec.astype(np.float64))), tuple(vec[:n].tolist()), n == vec.size
    )
