"""Real models for the task decoders: third-party ones from tests/data, tiny detectors built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.model.runtime import LoadedModel, load_model
from tests.support import DATA


@pytest.fixture(scope="session")
def data() -> Path:
    assert (DATA / "LICENSE").is_file(), f"test data missing at {DATA}"
    return DATA


def run(model: LoadedModel, tensor: np.ndarray) -> list[np.ndarray]:
    """One real invoke; the outputs in the model's output order (copies)."""
    it = model.interpreter
    it.set_tensor(model.inputs[0].index, tensor)
    it.invoke()
    return [it.get_tensor(o.index) for o in model.outputs]


def load(path: Path) -> LoadedModel:
    return load_model(path, runtime="ai_edge_litert", threads=1)
