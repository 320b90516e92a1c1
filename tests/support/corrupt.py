"""A corrupted-but-loadable model: its largest constant tensor overwritten with seeded noise.

The flatbuffer, shapes and quantization stay intact, so the model passes the guard, loads and runs;
only its answers are garbage. What shadow mode's agreement (and a rollout's gate) must catch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def corrupt_weights(model: Path, seed: int = 1) -> bytes:
    """The bytes of ``model`` with its largest constant tensor (found in the file by its contents)
    replaced by random bytes."""
    from edge.model.runtime import load_model

    data = model.read_bytes()
    interp = load_model(model, threads=1).interpreter
    best: tuple[int, int] | None = None
    for d in interp.get_tensor_details():
        try:
            raw = interp.get_tensor(d["index"]).tobytes()
        except ValueError:  # tensors without data
            continue
        if len(raw) > 1024 and (best is None or len(raw) > best[1]):
            offset = data.find(raw)
            if offset > 0:
                best = (offset, len(raw))
    assert best is not None, f"{model} has no constant tensor to corrupt"
    offset, size = best
    noise = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return data[:offset] + noise + data[offset + size :]
