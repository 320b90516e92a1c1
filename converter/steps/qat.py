"""Quantization-aware training; after pruning, the pruning-preserving scheme keeps the zeros.

The whole model is annotated and handed to tfmot's ``quantize_apply``, as ``quantize_model`` does: its
layout transforms fold BatchNormalization into the preceding convolution and handle activations, so a
per-layer registry lookup would wrongly refuse layers tfmot accepts. Which layers tfmot really rejects is
found by trying: ``check`` runs ``quantize_apply`` (seconds, no training) with a registry that records the
layers it cannot quantize instead of failing at the first one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from converter import _tf
from converter.data import Dataset
from converter.errors import ConvertError
from converter.steps import train


def _scheme(preserve_sparsity: bool) -> Any:
    if preserve_sparsity:
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
            default_8bit_prune_preserve_quantize_scheme as pqat,
        )

        return pqat.Default8BitPrunePreserveQuantizeScheme()
    return _tf.tfmot().quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _annotate(model: Any, skip: Sequence[str]) -> Any:
    keras, quant = _tf.keras(), _tf.tfmot().quantization.keras
    skipped = set(skip)

    def annotate(layer: Any) -> Any:
        if layer.name in skipped or isinstance(layer, keras.layers.InputLayer):
            return layer
        return quant.quantize_annotate_layer(layer)

    return keras.models.clone_model(model, clone_function=annotate)


def _apply(model: Any, skip: Sequence[str], scheme: Any) -> Any:
    quant = _tf.tfmot().quantization.keras
    try:
        annotated = _annotate(model, skip)
        with quant.quantize_scope():
            return quant.quantize_apply(annotated, scheme)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ConvertError(
            f"the model cannot be prepared for QAT: {str(exc).splitlines()[0][:300]}",
            "QAT needs a functional or Sequential tf-keras model; use --qat-skip LAYER for a layer "
            "named above, or drop --qat",
        ) from exc


def _recording_scheme(scheme: Any, skip: Sequence[str], rejected: list[tuple[str, str]]) -> Any:
    """``scheme`` whose registry notes the layers tfmot cannot quantize and lets them through unquantized."""
    quant = _tf.tfmot().quantization.keras
    inner = scheme.get_quantize_registry()
    skipped = set(skip)

    class _NoOp(quant.QuantizeConfig):  # type: ignore[name-defined]
        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: Any) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: Any) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_config(self) -> dict[str, Any]:
            return {}

    class _Recording(quant.QuantizeRegistry):  # type: ignore[name-defined]
        def supports(self, layer: Any) -> bool:
            # Skipped layers reach the registry only to quantize their outputs: keep tfmot's answer there.
            return layer.name not in skipped or bool(inner.supports(layer))

        def get_quantize_config(self, layer: Any) -> Any:
            if inner.supports(layer):
                return inner.get_quantize_config(layer)
            if layer.name not in skipped:
                rejected.append((layer.name, type(layer).__name__))
            return _NoOp()

    class _Scheme(quant.QuantizeScheme):  # type: ignore[name-defined]
        def get_layout_transformer(self) -> Any:
            return scheme.get_layout_transformer()

        def get_quantize_registry(self) -> Any:
            return _Recording()

    return _Scheme()


def prepare(
    model: Any, skip: Sequence[str] = (), *, preserve_sparsity: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The QAT model (not trained yet) and the check's step record; raise naming every layer tfmot rejects.

    With nothing rejected the recording registry answered exactly as tfmot's own, so the model it built is
    the one ``quantize_apply`` gives.
    """
    started = time.perf_counter()
    unknown = set(skip) - {layer.name for layer in model.layers}
    if unknown:
        raise ConvertError(
            f"--qat-skip names no layer of this model: {sorted(unknown)}",
            f"layers are: {', '.join(layer.name for layer in model.layers)}",
        )
    rejected: list[tuple[str, str]] = []
    qmodel = _apply(model, skip, _recording_scheme(_scheme(preserve_sparsity), skip, rejected))
    if rejected:
        names = ", ".join(f"{n} ({c})" for n, c in rejected)
        raise ConvertError(
            f"tensorflow-model-optimization cannot quantization-aware train {len(rejected)} layer"
            f"{'s' if len(rejected) > 1 else ''}: {names}",
            "keep them in float during QAT with "
            + " ".join(f"--qat-skip {n}" for n, _ in rejected)
            + ", or drop --qat (post-training int8 still quantizes them)",
        )
    return qmodel, {
        "name": "qat_check",
        "seconds": round(time.perf_counter() - started, 3),
        "skipped_layers": list(skip),
    }


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
    prepared: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` with fake quantization; ``prepared`` is ``prepare(model)``'s model when already built."""
    data = train.require_labels(data, "--qat")
    started = time.perf_counter()
    qmodel = (
        prepared if prepared is not None else prepare(model, skip, preserve_sparsity=preserve_sparsity)[0]
    )
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
