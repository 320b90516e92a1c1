"""Risky native work in a child Python: a C++ abort then fails one step with its reason, not edge-convert.

The TF converter and the TFLite kernels stop the whole process on some internal checks (e.g. an int16x8
model with LayerNormalization: ai-edge-litert aborts on its first invoke). Such a SIGABRT cannot be caught
in Python, so the --max-accuracy-drop search converts and first runs every candidate here, and
``--quantize int16x8`` does the same: the parent gets a :class:`ConvertError` naming the signal and the
child's last log lines, and the search goes on with the next candidate.

The child is ``python -m converter.isolate``; a job's ``kind`` is ``convert`` or ``evaluate``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import converter
from converter.errors import ConvertError

_ROOT = str(Path(converter.__file__).resolve().parents[1])  # the child imports this same converter package
_TAIL_LINES = 4
_DONE = "edge-convert-isolate: job done"


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _log_tail(stderr: str) -> str:
    # TF's start-up chatter (CUDA probes, oneDNN notice) says nothing about the failure.
    noise = ("cuda", "onednn", "absl::initializelog", "xnnpack delegate", "fully_quantize")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not any(n in ln.lower() for n in noise)]
    return " | ".join(useful[-_TAIL_LINES:])[-600:]


class _Worker:
    """One child Python serving jobs in turn (TensorFlow is imported once, not per candidate).

    Jobs go in as JSON lines on its stdin; results come back in files, each announced by a :data:`_DONE`
    line on its stdout (libraries may print there too). A crash ends the process: the job that was running
    fails, and the next job starts a new child.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    def _start(self) -> subprocess.Popen[str]:
        self.close()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "converter.isolate"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        return self._proc

    def _stderr_since(self, offset: int) -> str:
        self._log.flush()
        self._log.seek(offset)
        text = str(self._log.read())
        self._log.seek(0, os.SEEK_END)
        return text

    def run(self, job: dict[str, Any], what: str, fix: str) -> dict[str, Any]:
        proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        offset = self._log.seek(0, os.SEEK_END)
        with tempfile.TemporaryDirectory(prefix="edge-convert-job-") as d:
            result_path = Path(d) / "result.json"
            try:
                proc.stdin.write(json.dumps({**job, "result": str(result_path)}) + "\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it died: the read below sees the end of its output
            done = False
            for line in proc.stdout:
                if line.strip() == _DONE:
                    done = True
                    break
            result = json.loads(result_path.read_text()) if done and result_path.exists() else None
        if result is None:
            code = proc.wait()
            tail = _log_tail(self._stderr_since(offset))
            how = f"crashed the process ({_signal_name(code)})" if code < 0 else f"failed (exit code {code})"
            self.close()
            raise ConvertError(f"{what} {how}{': ' + tail if tail else ''}", fix)
        if "error" in result:
            raise ConvertError(result["error"]["what"], result["error"]["fix"] or fix)
        return dict(result)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                assert self._proc.stdin is not None
                self._proc.stdin.close()  # the child's loop ends at end of input
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


# One child per kind: running models needs no TensorFlow, so a kernel abort restarts only the light child.
_workers = {"convert": _Worker(), "evaluate": _Worker()}


def run(job: dict[str, Any], what: str, fix: str) -> dict[str, Any]:
    """Run ``job`` in a child Python and return its result; a crash or error becomes a ConvertError."""
    return _workers[job["kind"]].run(job, what, fix)


@atexit.register
def close() -> None:
    """End the child Pythons (edge-convert calls this when it has no more risky work)."""
    for worker in _workers.values():
        worker.close()


def _convert_job(job: dict[str, Any]) -> dict[str, Any]:
    from converter import quantize

    calibration = np.load(job["calibration"]) if job.get("calibration") else None
    metadata = {k: bytes.fromhex(v) for k, v in (job.get("metadata") or {}).items()}
    data, rec = quantize.convert(
        None,
        flavor="tf",
        mode=job["mode"],
        io_dtype=job["io_dtype"],
        calibration=calibration,
        saved_model_dir=Path(job["saved_model"]),
        progress=False,
        metadata=metadata or None,
    )
    Path(job["output"]).write_bytes(data)
    return {"record": rec}


def _evaluate_job(job: dict[str, Any]) -> dict[str, Any]:
    from converter import evaluate

    out = evaluate.run_tflite(job["model"], np.load(job["x"]))
    np.save(job["y"], out)
    return {"samples": len(out)}


def main() -> int:
    try:  # an abort is expected here now and then: no core file of a TensorFlow-sized process
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever the libraries print must not mix with the protocol
    for line in sys.stdin:
        job = json.loads(line)
        try:
            result = {"convert": _convert_job, "evaluate": _evaluate_job}[job["kind"]](job)
        except ConvertError as exc:
            result = {"error": {"what": exc.what, "fix": exc.fix}}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which owns the user's error
            first = str(exc).strip().splitlines()
            result = {
                "error": {
                    "what": f"{job['kind']} failed: {type(exc).__name__}: {first[0] if first else ''}",
                    "fix": "",
                }
            }
        Path(job["result"]).write_text(json.dumps(result))
        out.write(_DONE + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
