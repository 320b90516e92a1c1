"""Guarded loading: hostile models are refused with a reason and never take the caller down."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest

from edge.model import tflite_file
from edge.model.guard import (
    CRASH,
    IDENTIFIER,
    SIZE,
    STRUCTURE,
    TIMEOUT,
    GuardChild,
    GuardLimits,
    ModelRefusedError,
    Verdict,
    check_static,
    guard_bytes,
    guard_file,
    guard_many,
)
from tests.support import fuzz

# One byte of the LSTM model changed (found by the fuzzer): the flatbuffer is well-formed, so only
# the child process can find out that the runtime segfaults on it.
SEGFAULT_OFFSET, SEGFAULT_VALUE = 13004, 0
PASS_STATIC = Verdict(True, STRUCTURE, "", "", "", 0)


def _lstm(coral: Path) -> bytes:
    return (coral / "keras_lstm_mnist_ptq.tflite").read_bytes()


def test_good_models_pass_with_a_test_inference(coral: Path) -> None:
    v = guard_file(coral / "mobilenet_v1_0.25_128_quant.tflite")
    assert v.ok and v.stage == "ok", v
    assert v.child["outputs"][0]["shape"] == [1, 1001]
    assert v.info is not None and v.info.subgraphs[0].inputs[0].shape == (1, 128, 128, 3)
    assert len(v.sha256) == 64


def test_invoking_error_model_is_refused_with_the_runtime_reason(coral: Path) -> None:
    v = guard_file(coral / "model_invoking_error.tflite")
    assert not v.ok and v.stage == "allocate"
    assert "fake-op-double" in v.reason and "custom op" in v.fix
    with pytest.raises(ModelRefusedError, match="fake-op-double"):
        v.raise_if_refused()


def test_edgetpu_model_without_edgetpu_is_refused_with_a_fix(coral: Path) -> None:
    v = guard_file(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")
    assert not v.ok and "edgetpu-custom-op" in v.reason and "CPU model" in v.fix


def test_size_cap_is_checked_before_reading(coral: Path) -> None:
    v = guard_file(coral / "mobilenet_v1_0.25_128_quant.tflite", GuardLimits(max_bytes=1000))
    assert not v.ok and v.stage == SIZE and "over the 1000-byte limit" in v.reason


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "expected b'TFL3'"),
        (b"\x00" * 64, "expected b'TFL3'"),
        (b"PK\x03\x04" + b"\x00" * 60, "not a TFLite model"),
    ],
)
def test_not_tflite(data: bytes, needle: str) -> None:
    v = check_static(data)
    assert not v.ok and v.stage == IDENTIFIER and needle in v.reason


def test_truncated_models_are_refused_before_the_runtime(coral: Path) -> None:
    data = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    # (Cuts inside the flatbuffer: this model ends with a zip of label files the runtime never reads.)
    for cut in (9, 100, len(data) // 3, len(data) // 2):
        v = check_static(data[:cut])
        assert not v.ok and v.stage == STRUCTURE and "outside the file" in v.reason, (cut, v.reason)


def test_constant_tensor_shape_must_match_its_buffer(coral: Path) -> None:
    # A weight tensor claiming more elements than its buffer holds is how a model reads out of bounds.
    data = _lstm(coral)
    r = tflite_file._Reader(data)
    sg = r.tables(r.indirect(0), 2)[0]
    buffers = r.tables(r.indirect(0), 4)
    for t in r.tables(sg, 0):
        buf = int(r.scalar(t, 2, "u32"))
        if buf and r.vector(buffers[buf], 0, 1)[1]:
            start, rank = r.vector(t, 0, 4)
            break
    mutant = bytearray(data)
    struct.pack_into("<i", mutant, start, struct.unpack_from("<i", data, start)[0] * 2)
    v = check_static(bytes(mutant))
    assert not v.ok and "needs" in v.reason and "its buffer" in v.reason


@pytest.mark.parametrize("dim", [(1 << 31) - 1, 1 << 30, -1])
def test_huge_dimensions_are_refused(coral: Path, dim: int) -> None:
    data = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    start, _ = fuzz.shape_positions(data)[0]
    mutant = bytearray(data)
    struct.pack_into("<i", mutant, start + 4, dim)
    v = guard_bytes(bytes(mutant))
    assert not v.ok and v.stage == STRUCTURE
    assert ("negative dimension" in v.reason) if dim < 0 else ("limit" in v.reason or "needs" in v.reason)


def test_segfaulting_model_is_a_refusal_not_a_crash(coral: Path) -> None:
    mutant = bytearray(_lstm(coral))
    mutant[SEGFAULT_OFFSET] = SEGFAULT_VALUE
    v = guard_bytes(bytes(mutant))
    assert not v.ok and v.stage == CRASH and "SIGSEGV" in v.reason, v
    assert os.getpid() > 0  # we are still here; and a long-lived child is replaced after the crash:
    with GuardChild() as child:
        assert child.check(bytes(mutant)).stage == CRASH
        assert child.check(_lstm(coral)).ok
        assert child.restarts == 1


def test_timeout_and_memory_limits_refuse(coral: Path) -> None:
    data = (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    v = guard_bytes(data, GuardLimits(timeout_s=0.001))
    assert not v.ok and v.stage == TIMEOUT and "within" in v.reason
    v = guard_bytes(data, GuardLimits(memory_mb=1))
    assert not v.ok and v.stage in ("load", "allocate", "invoke", CRASH), v
    assert guard_bytes(data, GuardLimits(memory_mb=512)).ok


def test_bit_flipped_and_mutated_models_never_harm_the_parent(coral: Path) -> None:
    rng = random.Random(7)
    sources = [_lstm(coral), (coral / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()]
    mutants = [fuzz.mutate_model(rng.choice(sources), rng)[1] for _ in range(60)]
    verdicts = dict(guard_many(mutants, workers=2))
    assert sorted(verdicts) == list(range(60))
    refused = [v for v in verdicts.values() if not v.ok]
    assert refused and all(v.reason and v.fix for v in refused)
    # Whatever passed really loads and runs (the guard does not just refuse everything).
    for i, v in verdicts.items():
        if v.ok:
            assert v.child["outputs"], i


def test_guard_under_tflite_runtime_2_14(coral: Path, tflite_python: str) -> None:
    from tests.support.process import run_python

    script = f"""
import json
from pathlib import Path
from edge.model.guard import guard_bytes, guard_file
lstm = bytearray(Path({str(coral / "keras_lstm_mnist_ptq.tflite")!r}).read_bytes())
good = guard_file({str(coral / "mobilenet_v1_0.25_128_quant.tflite")!r})
bad = guard_file({str(coral / "model_invoking_error.tflite")!r})
lstm[{SEGFAULT_OFFSET}] = {SEGFAULT_VALUE}
crash = guard_bytes(bytes(lstm))
print(json.dumps([[v.ok, v.stage, (v.child.get("runtime") or dict()).get("name")] for v in (good, bad, crash)]))
"""
    r = run_python("-c", script, python=tflite_python, timeout=180)
    assert r.returncode == 0, r.stderr
    verdicts = json.loads(r.stdout.strip().splitlines()[-1])
    assert [v[:2] for v in verdicts] == [[True, "ok"], [False, "allocate"], [False, CRASH]], verdicts
    assert verdicts[0][2] == "tflite_runtime"


def test_command_line(coral: Path) -> None:
    from tests.support.process import run_module

    r = run_module(
        "edge.model.guard",
        str(coral / "keras_lstm_mnist_ptq.tflite"),
        str(coral / "model_invoking_error.tflite"),
        timeout=120,
    )
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 1 and [x["ok"] for x in lines] == [True, False], r.stdout + r.stderr
    assert "fake-op-double" in lines[1]["reason"] and lines[1]["fix"]
