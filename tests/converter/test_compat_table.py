"""The op-version table (used when no tflite-runtime python is at hand) matches the real tflite-runtime 2.14.

For every op of a digits int16x8 model: a file patched to the table's max version loads in the real
runtime, and one version more does not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from converter.compat import TFLITE_RUNTIME_214_MAX_OP_VERSIONS, check_op_versions

_LOAD = (
    "import sys, tflite_runtime.interpreter as t; i = t.Interpreter(model_path=sys.argv[1]); "
    "i.allocate_tensors(); print('OK')"
)


def _op_names() -> dict[int, str]:
    from tensorflow.lite.python.schema_py_generated import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def test_table_boundaries_match_the_real_runtime(digits, tmp_path: Path, tflite_python: str) -> None:
    from tensorflow.lite.tools import flatbuffer_utils

    from converter import _tf
    from edge.model import tflite_file

    tf, keras = _tf.tf(), _tf.keras()
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(digits.model, compile=False))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s[None]] for s in digits.x_test[:20])
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    base = tmp_path / "m.tflite"
    base.write_bytes(conv.convert())
    names = _op_names()

    def patched(op: str, version: int) -> Path:
        model = flatbuffer_utils.read_model(str(base))
        for oc in model.operatorCodes:
            if names[max(oc.builtinCode, oc.deprecatedBuiltinCode)] == op:
                oc.version = version
        out = tmp_path / f"{op}_v{version}.tflite"
        out.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        return out

    def loads(path: Path) -> bool:
        proc = subprocess.run(
            [tflite_python, "-c", _LOAD, str(path)], capture_output=True, text=True, timeout=60
        )
        return proc.stdout.strip() == "OK"

    ops = sorted(tflite_file.read(base).max_op_versions)
    assert {"CONV_2D", "FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE", "SOFTMAX"} <= set(ops)
    for op in ops:
        limit = TFLITE_RUNTIME_214_MAX_OP_VERSIONS[op]
        at, over = patched(op, limit), patched(op, limit + 1)
        assert loads(at), f"{op} v{limit} should load in tflite-runtime 2.14"
        assert not loads(over), f"{op} v{limit + 1} should not load in tflite-runtime 2.14"
        assert check_op_versions(tflite_file.read(at))[0]
        ok, reason = check_op_versions(tflite_file.read(over))
        assert not ok and f"{op} v{limit + 1}" in reason
