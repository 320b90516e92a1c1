"""The child Python that converts and first runs risky models (converter/isolate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from converter import isolate
from converter.errors import ConvertError
from converter.evaluate import run_tflite_isolated


def test_an_error_in_the_child_is_a_convert_error_and_the_child_serves_the_next_job(tmp_path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    try:
        with pytest.raises(ConvertError) as exc:
            run_tflite_isolated(bad, np.zeros((1, 8, 8, 1), np.float32), "int16x8")
        assert "evaluate failed" in exc.value.what and "bad.tflite" in exc.value.what
        assert "--quantize" in exc.value.fix
        worker = isolate._workers["evaluate"]
        pid = worker._proc.pid if worker._proc is not None else None
        with pytest.raises(ConvertError):  # the same child answers again: it did not die
            run_tflite_isolated(bad, np.zeros((1, 8, 8, 1), np.float32), "int16x8")
        assert worker._proc is not None and worker._proc.pid == pid and worker._proc.poll() is None
    finally:
        isolate.close()
    assert isolate._workers["evaluate"]._proc is None
