"""Quantization-aware training; after pruning, the pruning-preserving scheme keeps the zeros."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from converter import _tf
from converter.data import Dataset
from converter.errors import ConvertError
from converter.steps import train


def _registry() -> Any:
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def unsupported_layers(model: Any, skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    keras = _tf.keras()
    reg = _registry()
    return [
        (layer.name, type(layer).__name__)
        for layer in model.layers
        if layer.name not in skip
        and not isinstance(layer, keras.layers.InputLayer)
        and not reg.supports(layer)
    ]


def qat(
    model: Any,
    data: Dataset | None,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    skip: Sequence[str] = (),
    preserve_sparsity: bool = False,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    data = train.require_labels(data, "--qat")
    keras, tfmot = _tf.keras(), _tf.tfmot()
    started = time.perf_counter()
    unknown = set(skip) - {layer.name for layer in model.layers}
    if unknown:
        raise ConvertError(
            f"--qat-skip names no layer of this model: {sorted(unknown)}",
            f"layers are: {', '.join(layer.name for layer in model.layers)}",
        )
    bad = unsupported_layers(model, skip)
    if bad:
        name, cls = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(n for n, _ in bad[1:])})" if len(bad) > 1 else ""
        raise ConvertError(
            f"layer {name!r} ({cls}) cannot be quantization-aware trained by tensorflow-model-optimization{more}",
            f"add --qat-skip {name} to keep it in float during QAT, or drop --qat (post-training int8 still works)",
        )
    quant = tfmot.quantization.keras

    def annotate(layer: Any) -> Any:
        if layer.name in skip or isinstance(layer, keras.layers.InputLayer):
            return layer
        return quant.quantize_annotate_layer(layer)

    try:
        annotated = keras.models.clone_model(model, clone_function=annotate)
        with quant.quantize_scope():
            if preserve_sparsity:
                from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
                    default_8bit_prune_preserve_quantize_scheme as pqat,
                )

                qmodel = quant.quantize_apply(annotated, pqat.Default8BitPrunePreserveQuantizeScheme())
            else:
                qmodel = quant.quantize_apply(annotated)
    except (ValueError, RuntimeError) as exc:
        raise ConvertError(
            f"the model cannot be prepared for QAT: {str(exc).splitlines()[0]}",
            "use --qat-skip LAYER for the layer named above, or drop --qat",
        ) from exc
    train.fit(
        qmodel,
        data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        label="qat",
        progress=progress,
    )
    return qmodel, {
        "name": "qat",
        "seconds": round(time.perf_counter() - started, 3),
        "epochs": epochs,
        "preserve_sparsity": preserve_sparsity,
        "skipped_layers": list(skip),
    }
