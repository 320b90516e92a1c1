"""Which runtimes can load a .tflite: really load it where possible, otherwise check op versions.

A model that fails on the device must fail on the host first. tflite-runtime 2.14 (the last wheel for
many Raspberry Pi OS images) needs numpy<2, so it lives in another venv: we run a tiny script with its
python (``EDGE_TFLITE_RUNTIME_PYTHON`` or ``--tflite-runtime-python``). Without one we compare the
model's op versions with the kernels tflite-runtime 2.14's BuiltinOpResolver registers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edge.inference.preprocess import random_input
from edge.model import tflite_file
from edge.model.runtime import load_model

# Max builtin op versions registered by BuiltinOpResolver, transcribed from
# tensorflow/lite/core/kernels/register.cc (AddBuiltin(..., min_version, max_version); ops added without
# versions register version 1 only). Source: the copy stored for kuangzy2011/tensorflow-back20231123 at
# commit 315d929aafcc205d9cdda6701bd60b831ab7e556 (TF master of late 2023; the v2.14.0 tag itself was not
# available offline). Its boundaries were then checked against the real tflite-runtime 2.14.0 wheel (a model
# patched to the max version loads, max + 1 fails) for ADD, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE,
# FULLY_CONNECTED, MAX_POOL_2D, MEAN, QUANTIZE, RESHAPE and SOFTMAX; tests/converter/test_compat_table.py
# repeats that check. It is only the fallback: with a tflite-runtime python the model is really loaded.
TFLITE_RUNTIME_214_MAX_OP_VERSIONS: dict[str, int] = {
    "ABS": 5,
    "HARD_SWISH": 1,
    "RELU": 3,
    "RELU_N1_TO_1": 1,
    "RELU_0_TO_1": 1,
    "RELU6": 3,
    "TANH": 3,
    "LOGISTIC": 3,
    "AVERAGE_POOL_2D": 3,
    "MAX_POOL_2D": 3,
    "L2_POOL_2D": 1,
    "CONV_2D": 7,
    "DEPTHWISE_CONV_2D": 7,
    "SVDF": 4,
    "RNN": 3,
    "BIDIRECTIONAL_SEQUENCE_RNN": 3,
    "UNIDIRECTIONAL_SEQUENCE_RNN": 3,
    "EMBEDDING_LOOKUP": 3,
    "EMBEDDING_LOOKUP_SPARSE": 1,
    "FULLY_CONNECTED": 10,
    "LSH_PROJECTION": 1,
    "HASHTABLE_LOOKUP": 1,
    "SOFTMAX": 3,
    "CONCATENATION": 3,
    "ADD": 5,
    "SPACE_TO_BATCH_ND": 4,
    "BATCH_TO_SPACE_ND": 4,
    "MUL": 7,
    "L2_NORMALIZATION": 2,
    "LOCAL_RESPONSE_NORMALIZATION": 1,
    "LSTM": 4,
    "BIDIRECTIONAL_SEQUENCE_LSTM": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 4,
    "PAD": 4,
    "PADV2": 4,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "SKIP_GRAM": 1,
    "SPACE_TO_DEPTH": 2,
    "DEPTH_TO_SPACE": 2,
    "GATHER": 6,
    "TRANSPOSE": 6,
    "MEAN": 3,
    "DIV": 2,
    "SUB": 5,
    "SPLIT": 4,
    "SPLIT_V": 2,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 6,
    "EXP": 2,
    "TOPK_V2": 3,
    "LOG": 1,
    "LOG_SOFTMAX": 2,
    "CAST": 5,
    "DEQUANTIZE": 5,
    "PRELU": 1,
    "MAXIMUM": 4,
    "MINIMUM": 4,
    "ARG_MAX": 3,
    "ARG_MIN": 3,
    "GREATER": 2,
    "GREATER_EQUAL": 3,
    "LESS": 3,
    "LESS_EQUAL": 2,
    "FLOOR": 1,
    "CEIL": 1,
    "ROUND": 1,
    "NEG": 1,
    "SELECT": 3,
    "SELECT_V2": 1,
    "SLICE": 5,
    "SIN": 1,
    "COS": 1,
    "TRANSPOSE_CONV": 4,
    "TILE": 3,
    "SUM": 2,
    "REDUCE_PROD": 2,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "REDUCE_ANY": 1,
    "REDUCE_ALL": 1,
    "EXPAND_DIMS": 1,
    "SPARSE_TO_DENSE": 3,
    "EQUAL": 4,
    "NOT_EQUAL": 3,
    "SQRT": 1,
    "RSQRT": 2,
    "SHAPE": 1,
    "RANK": 1,
    "POW": 1,
    "FAKE_QUANT": 2,
    "PACK": 3,
    "ONE_HOT": 1,
    "LOGICAL_OR": 1,
    "LOGICAL_AND": 1,
    "LOGICAL_NOT": 1,
    "UNPACK": 4,
    "FLOOR_DIV": 3,
    "SQUARE": 1,
    "ZEROS_LIKE": 1,
    "FLOOR_MOD": 2,
    "RANGE": 1,
    "LEAKY_RELU": 2,
    "SQUARED_DIFFERENCE": 2,
    "FILL": 4,
    "MIRROR_PAD": 3,
    "UNIQUE": 1,
    "REVERSE_V2": 3,
    "ADD_N": 1,
    "GATHER_ND": 4,
    "WHERE": 2,
    "ELU": 1,
    "REVERSE_SEQUENCE": 1,
    "MATRIX_DIAG": 1,
    "QUANTIZE": 3,
    "MATRIX_SET_DIAG": 1,
    "IF": 1,
    "WHILE": 1,
    "NON_MAX_SUPPRESSION_V4": 1,
    "NON_MAX_SUPPRESSION_V5": 1,
    "SCATTER_ND": 1,
    "DENSIFY": 1,
    "SEGMENT_SUM": 1,
    "BATCH_MATMUL": 4,
    "CUMSUM": 1,
    "BROADCAST_TO": 3,
    "CALL_ONCE": 1,
    "RFFT2D": 1,
    "CONV_3D": 1,
    "IMAG": 1,
    "REAL": 1,
    "COMPLEX_ABS": 1,
    "BROADCAST_ARGS": 1,
    "HASHTABLE": 1,
    "HASHTABLE_FIND": 1,
    "HASHTABLE_IMPORT": 1,
    "HASHTABLE_SIZE": 1,
    "CONV_3D_TRANSPOSE": 1,
    "VAR_HANDLE": 1,
    "READ_VARIABLE": 1,
    "ASSIGN_VARIABLE": 1,
    "MULTINOMIAL": 1,
    "RANDOM_STANDARD_NORMAL": 1,
    "BUCKETIZE": 1,
    "RANDOM_UNIFORM": 1,
    "GELU": 2,
    "DYNAMIC_UPDATE_SLICE": 1,
    "UNSORTED_SEGMENT_PROD": 1,
    "UNSORTED_SEGMENT_MAX": 1,
    "UNSORTED_SEGMENT_MIN": 1,
    "UNSORTED_SEGMENT_SUM": 1,
    "ATAN2": 1,
    "SIGN": 2,
    "BITCAST": 1,
    "BITWISE_XOR": 1,
    "RIGHT_SHIFT": 1,
}
TFLITE_RUNTIME_214_CUSTOM_OPS = ("NumericVerify", "Mfcc", "AudioSpectrogram", "TFLite_Detection_PostProcess")

# Operations the Edge TPU executes, from Coral's "TensorFlow models on the Edge TPU" page
# (coral.ai/docs/edgetpu/models-intro, "Supported operations"), as TFLite builtin names.
EDGETPU_OPS = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SQUARED_DIFFERENCE",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

_PROBE = r"""
import json, sys
import numpy as np
try:
    import tflite_runtime
    from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_path=sys.argv[1])
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    it.invoke()
    print(json.dumps({"ok": True, "version": tflite_runtime.__version__}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
"""


def check_op_versions(info: tflite_file.ModelInfo) -> tuple[bool, str]:
    """Table check against tflite-runtime 2.14's registered kernels."""
    problems = []
    for name, version in sorted(info.max_op_versions.items()):
        if name in info.custom_ops:
            if name not in TFLITE_RUNTIME_214_CUSTOM_OPS:
                problems.append(f"custom op {name} is not built into tflite-runtime 2.14")
            continue
        limit = TFLITE_RUNTIME_214_MAX_OP_VERSIONS.get(name)
        if limit is None:
            problems.append(f"{name} has no kernel in tflite-runtime 2.14")
        elif version > limit:
            problems.append(f"{name} v{version} (2.14 registers up to v{limit})")
    if problems:
        return False, "op versions too new for tflite-runtime 2.14: " + "; ".join(problems)
    return True, "every op version is registered by tflite-runtime 2.14 (checked against its op table)"


def _ai_edge_litert(path: Path) -> dict[str, Any]:
    try:
        model = load_model(path, runtime="ai_edge_litert", delegate="cpu")
        rng = np.random.default_rng(0)
        for spec in model.inputs:
            model.interpreter.set_tensor(spec.index, random_input(spec, rng))
        model.interpreter.invoke()
        return {
            "ok": True,
            "reason": f"loaded and ran in ai-edge-litert {model.runtime.version}",
            "method": "load",
        }
    except Exception as exc:
        return {"ok": False, "reason": f"ai-edge-litert cannot run it: {exc}", "method": "load"}


def tflite_runtime_python(explicit: str | None = None) -> str | None:
    candidate = explicit or os.environ.get("EDGE_TFLITE_RUNTIME_PYTHON")
    return candidate if candidate and Path(candidate).exists() else None


def _tflite_runtime(path: Path, info: tflite_file.ModelInfo, python: str | None) -> dict[str, Any]:
    if python:
        try:
            proc = subprocess.run(
                [python, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=120
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, OSError, json.JSONDecodeError, IndexError) as exc:
            result = None
            note = f"could not run {python}: {type(exc).__name__}"
        if result is not None:
            if result["ok"]:
                return {
                    "ok": True,
                    "reason": f"loaded and ran in tflite-runtime {result['version']} ({python})",
                    "method": "load",
                }
            err = result["error"].replace("\n", " ").strip()
            if "No module named" not in err:
                return {"ok": False, "reason": f"tflite-runtime fails to load it: {err}", "method": "load"}
            note = f"{python} has no tflite_runtime"
        ok, reason = check_op_versions(info)
        return {"ok": ok, "reason": f"{reason} ({note})", "method": "op_versions"}
    ok, reason = check_op_versions(info)
    return {
        "ok": ok,
        "reason": reason + " (no tflite-runtime python: set EDGE_TFLITE_RUNTIME_PYTHON to really load it)",
        "method": "op_versions",
    }


def edgetpu_analysis(info: tflite_file.ModelInfo) -> dict[str, Any]:
    """What the Edge TPU needs, and which ops it would run (the compiler stops mapping at the first
    unsupported op: everything after it runs on the CPU)."""
    sub = info.subgraphs[0]
    problems = []
    io = [*sub.inputs, *sub.outputs]
    float_io = [t.name for t in io if t.dtype not in ("INT8", "UINT8")]
    if float_io:
        problems.append(f"inputs/outputs are not 8-bit ({', '.join(float_io)}): use --quantize int8")
    float_tensors = [t.name for t in sub.tensors if t.dtype in ("FLOAT32", "FLOAT16")]
    if float_tensors:
        problems.append(f"{len(float_tensors)} float tensors: the model is not fully integer-quantized")
    dynamic = [t.name for t in sub.inputs if any(d < 0 for d in t.shape_signature)]
    if dynamic:
        problems.append(f"dynamic input shapes ({', '.join(dynamic)}): the Edge TPU needs static shapes")
    batch = [t.name for t in sub.inputs if t.shape and t.shape[0] != 1]
    if batch:
        problems.append(f"batch size is not 1 ({', '.join(batch)})")
    if len(info.subgraphs) > 1:
        problems.append(f"{len(info.subgraphs)} subgraphs; the Edge TPU compiles the first only")
    mapped: list[str] = []
    cpu: list[str] = []
    stopped = False
    for op in sub.operators:
        if not stopped and op in EDGETPU_OPS:
            mapped.append(op)
        else:
            stopped = True
            cpu.append(op)
    if cpu:
        problems.append(
            f"{len(cpu)} of {len(sub.operators)} ops fall back to the CPU, from the first unsupported "
            f"op {cpu[0]}"
        )
    return {
        "ok": not problems,
        "reason": "; ".join(problems) or "fully 8-bit, static, batch 1, every op maps to the Edge TPU",
        "mapped_ops": mapped,
        "cpu_ops": cpu,
    }


def run_edgetpu_compiler(path: Path) -> dict[str, Any]:
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {
            "run": False,
            "reason": "edgetpu_compiler was not run: not on PATH (install it on an x86-64 Debian "
            "host: apt-get install edgetpu-compiler from packages.cloud.google.com/apt coral-edgetpu-stable)",
            "output": None,
        }
    proc = subprocess.run(
        [exe, "-s", "-o", str(path.parent), str(path)], capture_output=True, text=True, timeout=600
    )
    out = path.with_name(path.stem + "_edgetpu.tflite")
    ok = proc.returncode == 0 and out.exists()
    return {
        "run": True,
        "ok": ok,
        "reason": "compiled" if ok else f"edgetpu_compiler failed: {proc.stderr[-500:]}",
        "output": str(out) if ok else None,
        "log": proc.stdout[-4000:],
    }


def check(path: Path, *, tflite_python: str | None = None, edgetpu: bool = False) -> dict[str, Any]:
    info = tflite_file.read(path)
    tpu = edgetpu_analysis(info)
    tpu["compiler"] = (
        run_edgetpu_compiler(path)
        if edgetpu
        else {
            "run": False,
            "reason": "edgetpu_compiler was not run (pass --edgetpu to compile for a Coral)",
            "output": None,
        }
    )
    if not edgetpu and not tpu["ok"]:
        tpu["reason"] += " (convert with --edgetpu to target a Coral)"
    if tpu["compiler"].get("run") and not tpu["compiler"].get("ok"):
        tpu["ok"] = False
        tpu["reason"] = tpu["compiler"]["reason"]
    return {
        "ai_edge_litert": _ai_edge_litert(path),
        "tflite_runtime": _tflite_runtime(path, info, tflite_runtime_python(tflite_python)),
        "edgetpu": tpu,
    }
