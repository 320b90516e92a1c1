"""Guarded model loading: refuse what cannot be trusted, survive what breaks.

A ``.tflite`` file is a program for the interpreter, and the interpreter is no
sandbox (crafted models have crashed it: CVE-2020-15211 and friends). Before
the agent takes a model that came over the network, :func:`guard_bytes` runs:

1. cheap checks in this process: a size cap, the ``TFL3`` identifier, and
   :func:`edge.model.tflite_file.verify` (every offset, buffer size, tensor index and
   shape of the flatbuffer);
2. then, only for models that pass, a load from bytes + allocation + one test
   inference in a child process (:mod:`edge.model.guard_child`) with an address
   space cap (RLIMIT_AS), a CPU-time cap (RLIMIT_CPU) and a wall-clock timeout.

Whatever happens in the child (exception, abort, segfault, OOM, hang) comes
back as a refusing :class:`Verdict` with its reason; the caller never crashes.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edge
from edge.digest import sha256_hex
from edge.errors import ModelLoadError
from edge.model import tflite_file

if TYPE_CHECKING:
    import subprocess

    from edge.model.guard_limits import GuardLimits

MB = 1 << 20

# Verdict stages, in the order checks run.
SIZE, IDENTIFIER, STRUCTURE, CHILD_START, LOAD, ALLOCATE, INVOKE, CRASH, TIMEOUT, OK = (
    "size",
    "identifier",
    "structure",
    "child_start",
    "load",
    "allocate",
    "invoke",
    "crash",
    "timeout",
    "ok",
)


@dataclass(frozen=True)
class Verdict:
    """Whether a model may be loaded, and why not."""

    ok: bool
    stage: str  # where the decision was taken (see the stage constants)
    reason: str  # what was wrong ("" when ok)
    fix: str
    sha256: str
    size_bytes: int
    elapsed_ms: float = 0.0
    info: tflite_file.ModelInfo | None = None
    child: dict[str, Any] = field(default_factory=dict)  # the child's report (inputs, outputs, timings)

    def describe(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stage": self.stage,
            "reason": self.reason,
            "fix": self.fix,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }

    def raise_if_refused(self) -> Verdict:
        if not self.ok:
            raise ModelRefusedError(self)
        return self


class ModelRefusedError(ModelLoadError):
    """The guard refused a model; ``verdict`` says at which stage and why."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(f"model refused ({verdict.stage}): {verdict.reason}", verdict.fix)


_FIX_CORRUPT = (
    "the file is corrupt or crafted: re-export it with edge-convert and compare its sha256 with the original"
)


def _refuse(
    stage: str,
    reason: str,
    data: bytes,
    started: float,
    fix: str = _FIX_CORRUPT,
    info: tflite_file.ModelInfo | None = None,
    child: dict[str, Any] | None = None,
) -> Verdict:
    return Verdict(
        False,
        stage,
        reason,
        fix,
        sha256_hex(data),
        len(data),
        (time.perf_counter() - started) * 1000.0,
        info,
        child or {},
    )


def default_limits() -> GuardLimits:
    """``GuardLimits()``, imported on use (a pydantic model: see ``__getattr__`` below)."""
    from edge.model.guard_limits import GuardLimits

    return GuardLimits()


def check_static(data: bytes, limits: GuardLimits | None = None) -> Verdict:
    """The in-process fast path: size, identifier and flatbuffer structure, no runtime involved."""
    limits = limits or default_limits()
    started = time.perf_counter()
    if len(data) > limits.max_bytes:
        return _refuse(
            SIZE,
            f"model is {len(data)} bytes, over the {limits.max_bytes}-byte limit",
            data,
            started,
            "raise guard.max_bytes in the agent config if this model is trusted",
        )
    if len(data) < 8 or data[4:8] != tflite_file.FILE_IDENTIFIER:
        got = data[4:8] if len(data) >= 8 else data[:8]
        return _refuse(
            IDENTIFIER,
            f"file identifier is {bytes(got)!r}, expected {tflite_file.FILE_IDENTIFIER!r}: "
            "not a TFLite model",
            data,
            started,
            "send a .tflite file (convert Keras/SavedModel files with edge-convert first)",
        )
    try:
        verified = tflite_file.verify(
            data, max_tensor_bytes=limits.max_tensor_bytes, max_activation_bytes=limits.max_activation_bytes
        )
    except (tflite_file.TFLiteFormatError, RecursionError, OverflowError, MemoryError) as exc:
        return _refuse(STRUCTURE, f"invalid flatbuffer: {exc}", data, started)
    return Verdict(
        True,
        STRUCTURE,
        "",
        "",
        sha256_hex(data),
        len(data),
        (time.perf_counter() - started) * 1000.0,
        verified.info,
    )


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(edge.__file__).resolve().parents[1])  # so the child imports this very checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _signal_name(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    meaning = {
        "SIGXCPU": " (CPU time limit exceeded)",
        "SIGSEGV": " (segmentation fault)",
        "SIGABRT": " (aborted)",
        "SIGKILL": " (killed, e.g. out of memory)",
        "SIGBUS": " (bus error)",
    }
    return name + meaning.get(name, "")


class GuardChild:
    """A long-lived child process checking models one after the other.

    Starting the runtime costs about a second, so checking many models (the
    fuzz benchmark) reuses one child; a child that crashes or hangs is
    replaced for the next model. Not thread-safe: use one per thread.
    """

    def __init__(self, limits: GuardLimits | None = None) -> None:
        self.limits = limits or default_limits()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._buf = b""
        self._eof = False
        self.hello: dict[str, Any] = {}
        self.restarts = 0

    # -- process management ------------------------------------------------------------------------
    def _start(self) -> None:
        # Imported here: the agent keeps this module loaded for model updates, which may never come.
        import subprocess
        import tempfile

        self._stderr = tempfile.TemporaryFile()
        lim = self.limits
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge.model.guard_child",
                "--runtime",
                lim.runtime,
                "--threads",
                str(lim.threads),
                "--memory-mb",
                str(lim.memory_mb),
                "--cpu-s",
                str(lim.cpu_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_child_env(),
            start_new_session=True,
        )  # a runaway child must not get the terminal's signals, nor we its
        self._buf = b""
        line = self._readline(lim.start_timeout_s)
        hello = json.loads(line) if line else {}
        if not hello.get("ready"):
            detail = hello.get("error") or self._stderr_tail() or "no answer"
            self.close()
            raise ModelLoadError(
                f"the model-checking child process did not start: {detail}",
                "check that a TFLite runtime is installed (pip install ai-edge-litert)",
            )
        self.hello = hello

    def _stderr_tail(self, n: int = 600) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - n))
        text = self._stderr.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and "XNNPACK delegate" not in ln]
        return " | ".join(lines[-4:])[-n:]

    def _readline(self, timeout: float) -> bytes | None:
        """One protocol line, or None on EOF/timeout (``self._eof`` tells which)."""
        self._eof = False
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._eof = True
                    return None
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            import subprocess

            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(struct.pack("<Q", 0))
                    proc.stdin.close()
                    proc.wait(2)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _kill(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def __enter__(self) -> GuardChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checking ----------------------------------------------------------------------------------
    def check(self, data: bytes, *, static: Verdict | None = None) -> Verdict:
        """Full check of one model (static checks first unless ``static`` already passed)."""
        started = time.perf_counter()
        static = static or check_static(data, self.limits)
        if not static.ok:
            return static
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.restarts += 1
                self.close()
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
        except OSError:
            pass  # the child died already: reported below
        line = self._readline(self.limits.timeout_s)
        info = static.info
        if line is None:
            if not self._eof:  # no answer and the pipe still open: a hang
                self._kill()
                reason = f"load + test inference did not finish within {self.limits.timeout_s:g} s"
                verdict = _refuse(
                    TIMEOUT,
                    reason,
                    data,
                    started,
                    "the model is too slow for this device, or "
                    "loops forever: re-export it or raise guard.timeout_s",
                    info,
                )
            else:
                rc = self._kill()
                tail = self._stderr_tail()
                reason = f"the TFLite runtime crashed on this model: {_signal_name(rc)}" + (
                    f"; {tail}" if tail else ""
                )
                verdict = _refuse(CRASH, reason, data, started, _FIX_CORRUPT, info)
            self.restarts += 1
            self.close()
            return verdict
        result = json.loads(line)
        result["runtime"] = {"name": self.hello.get("runtime"), "version": self.hello.get("version")}
        if result.get("ok"):
            return Verdict(
                True,
                OK,
                "",
                "",
                static.sha256,
                static.size_bytes,
                (time.perf_counter() - started) * 1000.0,
                info,
                result,
            )
        error = str(result.get("error", "unknown error"))
        fix = _FIX_CORRUPT
        if "edgetpu-custom-op" in error:
            fix = (
                "this model is compiled for the Edge TPU and no Edge TPU runtime is available to check it: "
                "send the CPU model (the same name without _edgetpu)"
            )
        elif "custom op" in error:
            fix = "the model uses a custom op this runtime does not have: re-export it with builtin ops only"
        return _refuse(
            str(result.get("stage", LOAD)),
            f"the runtime refused the model at {result.get('stage', LOAD)}: {error}",
            data,
            started,
            fix,
            info,
            result,
        )


def guard_bytes(data: bytes, limits: GuardLimits | None = None) -> Verdict:
    """Check one model's bytes, in a fresh child process."""
    with GuardChild(limits) as child:
        try:
            return child.check(data)
        except ModelLoadError as exc:
            return _refuse(CHILD_START, exc.what, data, time.perf_counter(), exc.fix)


def guard_file(path: str | Path, limits: GuardLimits | None = None) -> Verdict:
    """Check a model file: its size is checked before it is read."""
    limits = limits or default_limits()
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return Verdict(False, SIZE, f"cannot read {path}: {exc.strerror}", "check the path", "", 0)
    if size > limits.max_bytes:
        return Verdict(
            False,
            SIZE,
            f"model is {size} bytes, over the {limits.max_bytes}-byte limit",
            "raise guard.max_bytes in the agent config if this model is trusted",
            "",
            size,
        )
    return guard_bytes(path.read_bytes(), limits)


def guard_many(
    models: Iterable[bytes], limits: GuardLimits | None = None, workers: int = 2
) -> Iterator[tuple[int, Verdict]]:
    """Check many models: static checks here, the survivors spread over ``workers`` long-lived children.

    Yields ``(index, verdict)`` as they complete (not in order).
    """
    limits = limits or default_limits()
    pending: list[tuple[int, bytes, Verdict]] = []
    for i, data in enumerate(models):
        static = check_static(data, limits)
        if static.ok:
            pending.append((i, data, static))
        else:
            yield i, static
    if not pending:
        return
    lock = threading.Lock()
    results: list[tuple[int, Verdict]] = []
    queue = iter(pending)

    def work() -> None:
        with GuardChild(limits) as child:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                i, data, static = item
                try:
                    verdict = child.check(data, static=static)
                except ModelLoadError as exc:
                    verdict = replace(static, ok=False, stage=CHILD_START, reason=exc.what, fix=exc.fix)
                with lock:
                    results.append((i, verdict))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(workers, len(pending))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    yield from results


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.model.guard MODEL...``: check models the way the agent checks an update."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edge.model.guard", description=main.__doc__)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--max-bytes", type=int, default=default_limits().max_bytes)
    p.add_argument("--timeout", type=float, default=default_limits().timeout_s)
    p.add_argument("--runtime", default="auto")
    args = p.parse_args(argv)
    from edge.model.guard_limits import GuardLimits

    limits = GuardLimits(max_bytes=args.max_bytes, timeout_s=args.timeout, runtime=args.runtime)
    refused = 0
    for path in args.models:
        v = guard_file(path, limits)
        refused += not v.ok
        print(json.dumps({"model": str(path), **v.describe()}))
    return 1 if refused else 0


__all__ = [
    "GuardChild",
    "GuardLimits",
    "ModelRefusedError",
    "Verdict",
    "check_static",
    "guard_bytes",
    "guard_file",
    "guard_many",
]


if __name__ == "__main__":
    sys.exit(main())


def __getattr__(name: str) -> Any:
    # The pydantic models live in edge.model.guard_limits: importing pydantic costs the agent's process ~6 MB of RSS
    # for good, and it only needs them to validate its config (in a forked child, edge.agent.config_view).
    if name in ("GuardLimits",):
        from edge.model.guard_limits import GuardLimits

        return {"GuardLimits": GuardLimits}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
