"""Magnitude pruning (polynomial schedule), fine-tuning, then strip: the weights keep their zeros."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from converter import _tf
from converter.data import Dataset
from converter.errors import ConvertError
from converter.steps import train


def _registry() -> Any:
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return prune_registry.PruneRegistry


def prunable_kernels(model: Any) -> dict[str, list[np.ndarray]]:
    """Weights the pruning step targets (kernels of supported layers), by layer name."""
    reg = _registry()
    out: dict[str, list[np.ndarray]] = {}
    for layer in model.layers:
        if not reg.supports(layer):
            continue
        kernels = [
            w.numpy()
            for w in layer.weights
            if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel", "embeddings")
        ]
        if kernels:
            out[layer.name] = kernels
    return out


def measure_sparsity(model: Any) -> tuple[float, dict[str, float]]:
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for name, kernels in prunable_kernels(model).items():
        z = sum(int(np.count_nonzero(k == 0)) for k in kernels)
        n = sum(int(k.size) for k in kernels)
        per_layer[name] = z / n if n else 0.0
        zeros, total = zeros + z, total + n
    return (zeros / total if total else 0.0), per_layer


def prune(
    model: Any,
    data: Dataset | None,
    *,
    sparsity: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    skip: Sequence[str] = (),
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    if not 0.0 < sparsity < 1.0:
        raise ConvertError(
            f"--prune must be a sparsity between 0 and 1 (e.g. 0.5); received {sparsity}",
            "pass the fraction of weights to zero, e.g. --prune 0.5",
        )
    data = train.require_labels(data, "--prune")
    keras, tfmot = _tf.keras(), _tf.tfmot()
    started = time.perf_counter()
    steps = train.steps_per_epoch(data, batch_size) * epochs
    # Reach the target a bit before the end, on a pruning step, and fine-tune the rest with a fixed mask.
    frequency = max(1, min(100, steps // 10))
    end_step = max(frequency, (int(steps * 0.7) // frequency) * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )
    reg = _registry()
    unknown = set(skip) - {layer.name for layer in model.layers}
    if unknown:
        raise ConvertError(
            f"--prune-skip names no layer of this model: {sorted(unknown)}",
            f"layers are: {', '.join(layer.name for layer in model.layers)}",
        )

    def wrap(layer: Any) -> Any:
        if layer.name in skip or isinstance(layer, keras.layers.InputLayer):
            return layer
        if reg.supports(layer) or isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        if not layer.weights:
            return layer
        raise ConvertError(
            f"layer {layer.name!r} ({type(layer).__name__}) cannot be pruned by tensorflow-model-optimization",
            f"add --prune-skip {layer.name} to leave it dense, or drop --prune",
        )

    try:
        wrapped = keras.models.clone_model(model, clone_function=wrap)
    except ConvertError:
        raise
    except ValueError as exc:
        raise ConvertError(
            f"the model cannot be prepared for pruning: {exc}",
            "pruning needs a Sequential or functional tf-keras model; drop --prune",
        ) from exc
    train.fit(
        wrapped,
        data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        label="pruning",
        progress=progress,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    achieved, per_layer = measure_sparsity(stripped)
    return stripped, {
        "name": "prune",
        "seconds": round(time.perf_counter() - started, 3),
        "sparsity": {
            "target": sparsity,
            "achieved": round(achieved, 4),
            "layers": {k: round(v, 4) for k, v in per_layer.items()},
        },
        "schedule": {"kind": "polynomial_decay", "end_step": end_step, "frequency": frequency},
        "epochs": epochs,
        "skipped_layers": list(skip),
    }
