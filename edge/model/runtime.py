"""Load a ``.tflite`` model into whichever TFLite runtime this machine has.

``load_model`` is the one door every tool uses (agent, edge-bench, the
converter's evaluation): it checks the file's structure before the runtime
sees it, picks the runtime and the delegate, falls back from an Edge TPU model
to its CPU twin when the Edge TPU is missing, and turns the runtime's terse
exceptions into errors that say what to do.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.digest import sha256_hex
from edge.errors import DelegateError, ModelLoadError
from edge.model import tflite_file
from edge.model.backends import RUNTIME_NAMES, Runtime, available_runtimes, normalize_name, select_runtime
from edge.model.delegates import (
    DEFAULT_LOADERS,
    DelegateLoader,
    LoadedDelegate,
    cpu_twin_path,
    is_edgetpu_model,
)
from edge.model.explain import explain_runtime_error

DELEGATE_CHOICES = ("auto", "cpu", "edgetpu")
X86_64 = ("x86_64", "amd64")
INT8_SLOWDOWN_NOTE = (
    "tflite-runtime 2.14 runs int8 models 10-18x slower than ai-edge-litert on x86_64 (MobileNet int8, "
    "benchmarks/agent_bench.py machine): install ai-edge-litert (pip install ai-edge-litert, the [agent] extra) and restart, "
    "or pass --runtime ai_edge_litert"
)


def default_threads() -> int:
    """Interpreter threads when none are configured: every core this process may use.

    Chosen with the agent's decode threads in mind (edge.agent.prefetch: one per core), by measurement
    (benchmarks/agent_bench.py, int8-jpeg case, 2 cores): when JPEG decoding costs more CPU than invoke,
    one interpreter thread makes up to ~10 % more images/s than two (the decode gets the CPU the second
    interpreter thread would take); when it costs less (small frames, BMPs, tensors, bigger models), two
    threads make up to ~1.8x more. The runtime's own default is one thread.
    """
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _is_int8(interpreter: Any) -> bool:
    """Whether any tensor is a quantized 8-bit one (int8 or uint8 with a scale)."""
    try:
        details = interpreter.get_tensor_details()
    except Exception:  # some runtimes refuse details of unnamed tensors: then only the inputs and outputs
        details = interpreter.get_input_details() + interpreter.get_output_details()
    return any(
        np.dtype(d["dtype"]) in (np.int8, np.uint8) and d.get("quantization", (0.0, 0))[0] != 0.0
        for d in details
    )


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor as the runtime reports it."""

    name: str
    index: int
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: np.dtype
    scale: float  # 0.0 when not quantized (per-tensor; per-axis models keep the first)
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    @classmethod
    def from_details(cls, d: Mapping[str, Any]) -> TensorSpec:
        scale, zero = d.get("quantization", (0.0, 0))
        sig = d.get("shape_signature")
        return cls(
            name=str(d["name"]),
            index=int(d["index"]),
            shape=tuple(int(x) for x in d["shape"]),
            shape_signature=tuple(int(x) for x in (sig if sig is not None and len(sig) else d["shape"])),
            dtype=np.dtype(d["dtype"]),
            scale=float(scale),
            zero_point=int(zero),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "quantization": {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None,
        }


@dataclass
class LoadedModel:
    """A model ready to invoke, with everything tools report about it."""

    path: Path  # the file actually running (the CPU twin after a fallback)
    requested_path: Path  # what the user asked for
    sha256: str
    size_bytes: int
    info: tflite_file.ModelInfo
    interpreter: Any
    runtime: Runtime
    delegate: str  # "cpu" or the delegate's name
    delegate_detail: str
    threads: int | None
    init_ms: float
    notes: list[str] = field(default_factory=list)  # e.g. why a fallback happened
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "requested_path": str(self.requested_path),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "runtime": {"name": self.runtime.name, "version": self.runtime.version},
            "delegate": self.delegate,
            "threads": self.threads,
            "inputs": [t.describe() for t in self.inputs],
            "outputs": [t.describe() for t in self.outputs],
            "notes": list(self.notes),
        }


def _read(path: Path, max_bytes: int | None) -> bytes:
    if not path.exists():
        raise ModelLoadError(
            f"model file not found: {path}",
            f"check the path (relative paths are resolved from the current directory, {Path.cwd()})",
        )
    if path.is_dir():
        raise ModelLoadError(
            f"model path is a directory, expected a .tflite file: {path}",
            "convert SavedModel folders with edge-convert first",
        )
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise ModelLoadError(
            f"model file is {size} bytes, over the {max_bytes}-byte limit: {path}",
            "raise the model size limit in the config if this model is trusted",
        )
    return path.read_bytes()


def inspect(data: bytes, path: Path | str = "<bytes>") -> tflite_file.ModelInfo:
    """Structural check of a model's bytes, raising ModelLoadError with a fix."""
    try:
        return tflite_file.parse(data)
    except tflite_file.TFLiteFormatError as exc:
        raise ModelLoadError(
            f"{path}: {exc}",
            "re-copy the file (compare its sha256 with the original) or re-export it with edge-convert",
        ) from exc


def load_model(
    path: str | Path,
    *,
    runtime: str = "auto",
    threads: int | None = None,
    delegate: str = "auto",
    delegate_options: Mapping[str, Any] | None = None,
    delegates: Mapping[str, DelegateLoader] | None = None,
    max_bytes: int | None = None,
) -> LoadedModel:
    """Load, allocate and describe a model; raise an :class:`~edge.errors.EdgeError` that says what to do."""
    if delegate not in DELEGATE_CHOICES:
        raise ModelLoadError(
            f"--delegate must be one of {', '.join(DELEGATE_CHOICES)}; received {delegate!r}",
            "pick one of the listed values",
        )
    if threads is not None and threads < 1:
        raise ModelLoadError(
            f"--threads must be >= 1; received {threads}", "omit it for the runtime's default"
        )
    loaders = dict(DEFAULT_LOADERS if delegates is None else delegates)
    requested = Path(path)
    data = _read(requested, max_bytes)
    info = inspect(data, requested)
    rt = select_runtime(runtime)
    model_path = requested
    notes: list[str] = []
    loaded: LoadedDelegate | None = None

    if is_edgetpu_model(info.custom_ops):
        twin = cpu_twin_path(requested)
        if delegate == "cpu":
            if twin is None:
                raise ModelLoadError(
                    f"{requested} is compiled for the Edge TPU (edgetpu-custom-op) and --delegate cpu was asked, "
                    "but its CPU twin is missing",
                    f"put the CPU model next to it as {requested.name.replace('_edgetpu', '')}, or run with "
                    "--delegate edgetpu on a board with a Coral",
                )
            notes.append(f"--delegate cpu: running the CPU twin {twin.name} instead of the Edge TPU model")
        else:
            try:
                loaded = loaders["edgetpu"].load(rt, dict(delegate_options or {}))
            except DelegateError as exc:
                if delegate == "edgetpu" or twin is None:
                    if twin is None:
                        raise DelegateError(
                            exc.what,
                            exc.fix + f"; or put the CPU model next to it as "
                            f"{requested.name.replace('_edgetpu', '')} to fall back to the CPU",
                        ) from exc
                    raise
                notes.append(f"Edge TPU unavailable ({exc.what}); fell back to the CPU twin {twin.name}")
        if loaded is None:
            assert twin is not None
            model_path = twin
            data = _read(twin, max_bytes)
            info = inspect(data, twin)
    elif delegate == "edgetpu":
        notes.append(
            f"{requested.name} has no Edge TPU ops (not compiled by edgetpu_compiler): running on the CPU"
        )

    started = time.perf_counter()
    kwargs: dict[str, Any] = {"model_content": data}
    if threads is not None:
        kwargs["num_threads"] = threads
    if loaded is not None:
        kwargs["experimental_delegates"] = [loaded.handle]
    try:
        interpreter = rt.interpreter_class(**kwargs)
        interpreter.allocate_tensors()
    except Exception as exc:
        raise explain_runtime_error(exc, model_path, rt, info) from exc
    init_ms = (time.perf_counter() - started) * 1000.0
    if rt.name == "tflite_runtime" and platform.machine().lower() in X86_64 and _is_int8(interpreter):
        notes.append(INT8_SLOWDOWN_NOTE)
    return LoadedModel(
        path=model_path,
        requested_path=requested,
        sha256=sha256_hex(data),
        size_bytes=len(data),
        info=info,
        interpreter=interpreter,
        runtime=rt,
        delegate=loaded.name if loaded else "cpu",
        delegate_detail=loaded.detail if loaded else "",
        threads=threads,
        init_ms=init_ms,
        notes=notes,
        inputs=tuple(TensorSpec.from_details(d) for d in interpreter.get_input_details()),
        outputs=tuple(TensorSpec.from_details(d) for d in interpreter.get_output_details()),
    )


__all__ = [
    "DELEGATE_CHOICES",
    "RUNTIME_NAMES",
    "LoadedModel",
    "Runtime",
    "TensorSpec",
    "available_runtimes",
    "default_threads",
    "inspect",
    "load_model",
    "normalize_name",
    "select_runtime",
]
