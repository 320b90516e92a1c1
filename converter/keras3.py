"""Keras 3 models for pruning and QAT: rebuilt layer by layer in tf-keras, with the same weights.

tensorflow-model-optimization only wraps tf-keras (Keras 2) layers (tensorflow/model-optimization#1119,
#1270), so a Keras 3 functional or Sequential model is rebuilt from its graph: every layer gets its tf-keras
twin (same class name, same config), called on the same inputs, then given the same weights. The twin must
compute what the original does: outputs on sample inputs are compared before any training. Post-training
quantization needs none of this: Keras 3 models convert directly.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np

from converter import _tf
from converter.errors import ConvertError

# Keras 3 arguments tf-keras does not take, dropped when they hold what tf-keras does anyway.
_NEUTRAL = (None, False, 0, "", "float32")
# What every tf-keras layer takes through **kwargs (base Layer arguments).
_BASE_LAYER_KWARGS = {
    "name",
    "trainable",
    "dtype",
    "dynamic",
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
}


def _plain(value: Any) -> Any:
    """Keras 3 serialized objects in a config, as tf-keras reads them (dtype policies -> their name)."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
            return value.get("config", {}).get("name", "float32")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _twin(layer: Any) -> tuple[Any | None, str]:
    """(tf-keras layer built from ``layer``'s config, "") or (None, why not)."""
    keras2 = _tf.keras()
    cls = getattr(keras2.layers, type(layer).__name__, None)
    if cls is None:
        return None, "no tf-keras layer of that class"
    config = {
        k: _plain(v) for k, v in layer.get_config().items() if not k.endswith("_initializer")
    }  # weights are copied: initializers never run
    # Subclasses pass **kwargs up (BatchNormalization -> BatchNormalizationBase): gather the whole chain.
    accepted = set(_BASE_LAYER_KWARGS)
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    for key in [k for k in config if k not in accepted]:
        if config[key] not in _NEUTRAL:
            return None, f"tf-keras has no argument {key}={config[key]!r}"
        del config[key]  # a Keras 3 option left at its default (lora_rank=None, quantization_config=None...)
    try:
        return cls.from_config(config), ""
    except (TypeError, ValueError) as exc:
        return None, f"tf-keras refuses its config ({str(exc).splitlines()[0][:160]})"


def rebuild(model: Any, *, samples: int = 16, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """The tf-keras twin of a Keras 3 model and a step record; refuses naming every layer without a twin."""
    import keras as keras3

    keras2 = _tf.keras()
    started = time.perf_counter()
    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph in _functional
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None or not getattr(graph, "inputs", None):
        raise ConvertError(
            f"the Keras 3 model {model.name!r} is subclassed: it has no layer graph to rebuild",
            "build it as a functional or Sequential model, or drop --prune/--qat (post-training "
            "quantization converts it as it is)",
        )
    twins: dict[str, Any] = {}
    missing: list[str] = []
    for layer in model.layers:
        if isinstance(layer, keras3.layers.InputLayer):
            continue
        twin, why = _twin(layer)
        if twin is None:
            missing.append(f"{layer.name} ({type(layer).__name__}: {why})")
        else:
            twins[layer.name] = twin
    if missing:
        raise ConvertError(
            f"{len(missing)} layer{'s' if len(missing) > 1 else ''} of the Keras 3 model have no "
            f"tf-keras twin, so tensorflow-model-optimization cannot prune or QAT it: " + "; ".join(missing),
            "rebuild the model with tf_keras layers, or drop --prune/--qat (post-training int8 "
            "converts Keras 3 models directly)",
        )
    tensors: dict[int, Any] = {}
    inputs = []
    for t in graph.inputs:
        name = t._keras_history[0].name if hasattr(t, "_keras_history") else None
        k2 = keras2.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=name)
        tensors[id(t)] = k2
        inputs.append(k2)

    def mapped(value: Any) -> Any:
        if isinstance(value, keras3.KerasTensor):
            return tensors[id(value)]
        if isinstance(value, (list, tuple)):
            return type(value)(mapped(v) for v in value)
        return value

    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            op = node.operation
            if isinstance(op, keras3.layers.InputLayer):
                continue
            if op.name not in twins:
                raise ConvertError(
                    f"operation {op.name!r} ({type(op).__name__}) of the Keras 3 model is not a "
                    "layer tf-keras can rebuild",
                    "drop --prune/--qat",
                )
            args = [mapped(a) for a in node.arguments.args]
            kwargs = {k: mapped(v) for k, v in (node.arguments.kwargs or {}).items() if v is not None}
            outs = twins[op.name](*args, **kwargs)
            flat_out = outs if isinstance(outs, (list, tuple)) else [outs]
            for k3t, k2t in zip(node.outputs, flat_out):
                tensors[id(k3t)] = k2t
    rebuilt = keras2.Model(
        inputs,
        [tensors[id(t)] for t in graph.outputs] if len(graph.outputs) > 1 else tensors[id(graph.outputs[0])],
        name=model.name,
    )
    for name, twin in twins.items():
        twin.set_weights(model.get_layer(name).get_weights())
    diff = _compare(model, rebuilt, samples, seed)
    return rebuilt, {
        "name": "keras3_rebuild",
        "seconds": round(time.perf_counter() - started, 3),
        "layers": len(twins),
        "max_abs_output_diff": diff,
        "check_samples": samples,
    }


def _compare(model: Any, rebuilt: Any, samples: int, seed: int) -> float:
    shape = tuple(1 if d is None else int(d) for d in model.inputs[0].shape[1:])
    x = np.random.default_rng(seed).random((samples, *shape), dtype=np.float32)
    want = np.asarray(model.predict(x, verbose=0))
    got = np.asarray(rebuilt.predict(x, verbose=0))
    diff = float(np.max(np.abs(want - got))) if want.size else 0.0
    if want.shape != got.shape or not np.allclose(want, got, rtol=1e-3, atol=1e-4):
        raise ConvertError(
            f"the tf-keras rebuild of the Keras 3 model computes other outputs (max difference "
            f"{diff:.3g} on {samples} sample inputs), so pruning/QAT it would not train your model",
            "drop --prune/--qat (post-training int8 converts Keras 3 models directly)",
        )
    return round(diff, 8)
