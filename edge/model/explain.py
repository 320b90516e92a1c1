"""Turn a TFLite runtime's exception into an error that names the fix."""

from __future__ import annotations

import re
from pathlib import Path

from edge.errors import ModelLoadError
from edge.model.backends import Runtime
from edge.model.tflite_file import ModelInfo

_CUSTOM = re.compile(r"unresolved custom op: ([\w.\-/]+?)\.?\s", re.S)
_OP_VERSION = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")


def explain_runtime_error(
    exc: BaseException, path: Path, runtime: Runtime, info: ModelInfo
) -> ModelLoadError:
    text = str(exc)
    where = f"{path} in {runtime.name} {runtime.version}"
    m = _CUSTOM.search(text + " ")
    if m:
        op = m.group(1)
        if op == "edgetpu-custom-op":
            return ModelLoadError(
                f"{where}: the model was compiled for the Coral Edge TPU (custom op edgetpu-custom-op) and the "
                "Edge TPU delegate is not loaded",
                "run with --delegate edgetpu on a board with a Coral and libedgetpu installed, or use the CPU "
                f"model ({path.name.replace('_edgetpu', '')}) that edgetpu_compiler started from",
            )
        return ModelLoadError(
            f"{where}: unresolved custom op {op!r}: this runtime does not implement it",
            "reconvert the model with builtin ops only (edge-convert does), or run it where the op is registered",
        )
    m = _OP_VERSION.search(text)
    if m:
        op, version = m.group(1), m.group(2)
        return ModelLoadError(
            f"{where}: op {op} version {version} is newer than this runtime supports",
            "install the maintained runtime (pip install ai-edge-litert) on the device, or reconvert for older "
            "runtimes with edge-convert --quantize int8 or float16 (dynamic-range models need newer op versions)",
        )
    if "not a valid Flatbuffer" in text or "null/empty" in text:
        return ModelLoadError(
            f"{where}: the file is not a valid TFLite flatbuffer (truncated or corrupt)",
            "re-copy the model and compare its sha256 with the original",
        )
    ops = ", ".join(f"{k} v{v}" for k, v in sorted(info.max_op_versions.items()))
    return ModelLoadError(
        f"{where}: the runtime refused the model: {text.strip()} (ops: {ops})",
        "check the model with edge-convert's compatibility report, or try --runtime ai_edge_litert",
    )
