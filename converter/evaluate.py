"""Run the .tflite through the agent's own runtime code and compare it with the float model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from converter.progress import iterate
from edge.inference.preprocess import dequantize, quantize
from edge.model.runtime import load_model


def run_tflite(
    path: str | Path, x: np.ndarray, *, runtime: str = "ai_edge_litert", progress: bool = False
) -> np.ndarray:
    """Outputs (dequantized float32) of the first output tensor, one sample per invoke as on a device."""
    model = load_model(path, runtime=runtime, delegate="cpu")
    interp = model.interpreter
    ins, outs = model.inputs[0], model.outputs[0]
    results = []
    for sample in iterate(x, "evaluating", len(x), progress):
        interp.set_tensor(ins.index, quantize(sample[None, ...].astype(np.float32), ins))
        interp.invoke()
        results.append(dequantize(interp.get_tensor(outs.index), outs)[0])
    return np.stack(results) if results else np.zeros((0,), np.float32)


def run_tflite_isolated(path: str | Path, x: np.ndarray, what: str) -> np.ndarray:
    """:func:`run_tflite` in a child Python: a kernel that aborts the process fails with a ConvertError."""
    import tempfile

    from converter import isolate

    with tempfile.TemporaryDirectory(prefix="edge-convert-eval-") as d:
        np.save(Path(d) / "x.npy", x)
        isolate.run(
            {
                "kind": "evaluate",
                "model": str(path),
                "x": str(Path(d) / "x.npy"),
                "y": str(Path(d) / "y.npy"),
            },
            f"running the {what} model in ai-edge-litert",
            "pick another --quantize mode: this model's ops have no working kernel in this mode",
        )
        return np.load(Path(d) / "y.npy")


def top1(y: np.ndarray) -> np.ndarray:
    # argmax, never argsort(-y): quantized outputs may be unsigned.
    return np.asarray(y).reshape(len(y), -1).argmax(axis=1)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float | None:
    ref = reference.astype(np.float64).ravel()
    noise = ref - test.astype(np.float64).ravel()
    p_noise = float(np.sum(noise**2))
    p_sig = float(np.sum(ref**2))
    if p_sig == 0.0:
        return None
    return 200.0 if p_noise == 0.0 else round(10.0 * math.log10(p_sig / p_noise), 2)


def metrics(
    float_out: np.ndarray | None, tflite_out: np.ndarray | None, y: np.ndarray | None
) -> dict[str, Any]:
    """The report's metrics block; null where data or labels are missing."""
    m: dict[str, Any] = {
        "float_accuracy": None,
        "tflite_accuracy": None,
        "accuracy_drop": None,
        "top1_agreement": None,
        "output_sqnr_db": None,
        "eval_samples": 0,
    }
    if float_out is None or tflite_out is None or len(tflite_out) == 0:
        return m
    m["eval_samples"] = int(len(tflite_out))
    m["output_sqnr_db"] = sqnr_db(float_out, tflite_out)
    classifier = float_out.ndim == 2 and float_out.shape[1] > 1
    if classifier:
        pf, pt = top1(float_out), top1(tflite_out)
        m["top1_agreement"] = round(float(np.mean(pf == pt)), 4)
        if y is not None:
            fa, ta = float(np.mean(pf == y)), float(np.mean(pt == y))
            m["float_accuracy"] = round(fa, 4)
            m["tflite_accuracy"] = round(ta, 4)
            m["accuracy_drop"] = round((fa - ta) * 100.0, 2)  # percentage points
    return m
