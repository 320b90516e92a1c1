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


def build_models(root: Path, models: dict[str, list[np.ndarray]], size: int) -> dict[str, Path]:
    """Float models whose outputs are the given arrays (build_detectors.py ``outputs`` jobs, one
    TensorFlow start-up in a subprocess for all): name -> .tflite under ``root``."""
    import subprocess
    import sys

    from tests.support.process import subprocess_env

    jobs, paths = [], {}
    for name, arrays in models.items():
        files = []
        for i, a in enumerate(arrays):
            np.save(root / f"{name}-{i}.npy", a)
            files.append(str(root / f"{name}-{i}.npy"))
        paths[name] = root / f"{name}.tflite"
        jobs.append(",".join(["outputs", str(paths[name]), str(size), *files]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("build_detectors.py")), *jobs],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(TF_USE_LEGACY_KERAS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return paths
