"""The disposable process in which :mod:`edge.model.guard` lets the TFLite runtime touch an untrusted model.

TFLite's own security policy says a model is a program and the interpreter no
sandbox, so the first load, allocation and invocation of a model that came
over the network happen here, under resource limits, and never in the agent.
If the runtime crashes, aborts or runs away, only this process dies.

Protocol (binary, on stdin/stdout; the parent is :class:`edge.model.guard.GuardChild`):
the child writes one JSON line ``{"ready": true, ...}`` once the runtime is
imported; then, for every frame it reads (8-byte little-endian length, then
the model bytes) it writes one JSON line with the verdict. A zero length ends
the process. Anything the runtime prints goes to stderr, never into the
protocol stream.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import sys
import time
from typing import Any, BinaryIO

MB = 1 << 20


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _check(rt: Any, data: bytes, threads: int, cpu_s: float, invokes: int) -> dict[str, Any]:
    import numpy as np

    from edge.inference.preprocess import random_input
    from edge.model.runtime import TensorSpec

    # Per-model CPU budget on a long-lived child: the soft limit moves with the time already used.
    _limit(resource.RLIMIT_CPU, int(_cpu_used() + cpu_s) + 1)
    stage = "load"
    started = time.perf_counter()
    try:
        interpreter = rt.interpreter_class(model_content=data, num_threads=threads)
        stage = "allocate"
        interpreter.allocate_tensors()
        inputs = [TensorSpec.from_details(d) for d in interpreter.get_input_details()]
        outputs = [TensorSpec.from_details(d) for d in interpreter.get_output_details()]
        load_ms = (time.perf_counter() - started) * 1000.0
        stage = "invoke"
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for _ in range(invokes):
            for spec in inputs:
                if any(d < 0 for d in spec.shape):
                    raise ValueError(f"input {spec.name!r} has a dynamic shape {list(spec.shape)}")
                interpreter.set_tensor(spec.index, random_input(spec, rng))
            interpreter.invoke()
        invoke_ms = (time.perf_counter() - started) * 1000.0 / max(invokes, 1)
        described = []
        for spec in outputs:
            value = interpreter.get_tensor(spec.index)
            finite = bool(np.all(np.isfinite(value))) if np.issubdtype(value.dtype, np.floating) else True
            described.append(
                {"name": spec.name, "shape": list(value.shape), "dtype": value.dtype.name, "finite": finite}
            )
        return {
            "ok": True,
            "stage": "ok",
            "load_ms": load_ms,
            "invoke_ms": invoke_ms,
            "inputs": [s.describe() for s in inputs],
            "outputs": described,
        }
    except MemoryError:
        return {"ok": False, "stage": stage, "error": "ran out of memory (over the guard's memory limit)"}
    except Exception as exc:  # the runtime's own refusals: unresolved ops, bad shapes, ...
        text = str(exc).strip().splitlines()
        return {"ok": False, "stage": stage, "error": f"{type(exc).__name__}: {' '.join(text)[:500]}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.model.guard_child", description=__doc__.splitlines()[0])
    p.add_argument("--runtime", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-mb", type=int, default=1024, help="address space allowed above the baseline")
    p.add_argument("--cpu-s", type=float, default=30.0, help="CPU seconds per model")
    p.add_argument("--invokes", type=int, default=1)
    args = p.parse_args(argv)

    # Keep the protocol stream for ourselves: native code printing to fd 1 must not corrupt it.
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer

    from edge.model.runtime import select_runtime

    try:
        rt = select_runtime(args.runtime)
    except Exception as exc:
        proto.write((json.dumps({"ready": False, "error": str(exc)}) + "\n").encode())
        return 3
    # Limits after the imports: the runtime's own libraries are trusted, the model is not.
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_FSIZE, 0)
    if args.memory_mb > 0:
        _limit(resource.RLIMIT_AS, _vm_bytes() + args.memory_mb * MB)
    proto.write(
        (
            json.dumps({"ready": True, "runtime": rt.name, "version": rt.version, "pid": os.getpid()}) + "\n"
        ).encode()
    )
    while True:
        try:
            (n,) = struct.unpack("<Q", _read_exact(stdin, 8))
            if n == 0:
                return 0
            data = _read_exact(stdin, n)
        except EOFError:
            return 0
        result = _check(rt, data, args.threads, args.cpu_s, args.invokes)
        proto.write((json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    sys.exit(main())
