"""The agent never imports TensorFlow, and runs with tflite-runtime 2.14 (numpy<2) as well as ai-edge-litert."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from tests.support.agent import agent_args
from tests.support.broker import Mosquitto
from tests.support.process import run_python

CAT_CLASSES = range(282, 287)

_PROBE = textwrap.dedent("""
    import json, sys
    from edge.agent.cli import main
    rc = main(sys.argv[1:])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                   ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "tensorboard"))
    runtimes = sorted(m for m in sys.modules if m.split(".")[0] in ("ai_edge_litert", "tflite_runtime"))
    print("PROBE " + json.dumps({"rc": rc, "heavy": heavy, "runtimes": runtimes}))
""")


def _probe(python: str, broker: Mosquitto, tmp_path: Path, coral: Path, *extra: str) -> dict:
    args = agent_args(
        broker,
        "r1",
        tmp_path / "state",
        "--model",
        coral / "mobilenet_v1_0.25_128_quant.tflite",
        "--source",
        coral / "cat.bmp",
        "--once",
        *extra,
    )
    r = run_python("-c", _PROBE, *args, python=python, timeout=180)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, f"probe printed nothing (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(line[6:]) | {"stderr": r.stderr}


def test_agent_never_imports_tensorflow(mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture) -> None:
    sub = capture("edge/r1/predictions")
    out = _probe(sys.executable, mosquitto, tmp_path, coral)  # this venv HAS tensorflow installed
    assert out["rc"] == 0, out["stderr"]
    assert out["heavy"] == [], f"the agent imported {out['heavy'][:5]}"
    assert "ai_edge_litert" in out["runtimes"]
    sub.wait(lambda s: s.on("edge/r1/predictions"), 10, "prediction")


def test_agent_runs_with_tflite_runtime_2_14(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture, tflite_python: str
) -> None:
    python = tflite_python
    sub = capture("edge/r1/predictions", "edge/r1/status")
    out = _probe(python, mosquitto, tmp_path, coral, "--runtime", "tflite_runtime", "--top-k", "3")
    assert out["rc"] == 0, out["stderr"]
    assert (
        out["heavy"] == [] and "tflite_runtime" in out["runtimes"] and "ai_edge_litert" not in out["runtimes"]
    )
    pred = sub.wait(lambda s: s.json("edge/r1/predictions"), 10, "prediction")[0]
    assert any(c["index"] in CAT_CLASSES for c in pred["top_k"]), pred
    status = sub.json("edge/r1/status")[0]
    assert status["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}, status["runtime"]
    numpy_version = run_python("-c", "import numpy; print(numpy.__version__)", python=python).stdout
    assert numpy_version.startswith("1."), numpy_version


def test_camera_without_opencv_says_what_to_install(tmp_path: Path, coral: Path) -> None:
    # cv2 is an optional extra: block it so the test means the same with or without it installed
    code = (
        "import sys; sys.modules['cv2'] = None\nfrom edge.agent.cli import main\nsys.exit(main(sys.argv[1:]))"
    )
    r = run_python(
        "-c",
        code,
        *agent_args(
            "mqtt://127.0.0.1:1",
            "cam",
            tmp_path / "s",
            "--model",
            coral / "mobilenet_v1_0.25_128_quant.tflite",
            "--source",
            "camera:0",
            "--once",
        ),
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert (
        "needs OpenCV" in r.stderr and "edge-ml-toolkit[camera]" in r.stderr and "Traceback" not in r.stderr
    )
