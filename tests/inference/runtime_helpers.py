"""Helpers for the task-decoder tests: real models (tests/data, the ``coral`` fixture) through the real runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.model.runtime import LoadedModel, load_model


def run(model: LoadedModel, tensor: np.ndarray) -> list[np.ndarray]:
    """One real invoke; the outputs in the model's output order (copies)."""
    it = model.interpreter
    it.set_tensor(model.inputs[0].index, tensor)
    it.invoke()
    return [it.get_tensor(o.index) for o in model.outputs]


def load(path: Path) -> LoadedModel:
    return load_model(path, runtime="ai_edge_litert", threads=1)
