"""The agent never imports TensorFlow, and runs with tflite-runtime 2.14 (numpy<2) as well as ai-edge-litert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, subprocess_env
from tests.support.broker import Mosquitto

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
    args = [
        "run",
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--source",
        str(coral / "cat.bmp"),
        "--broker",
        broker.url,
        "--device-id",
        "r1",
        "--state-dir",
        str(tmp_path / "state"),
        "--once",
        *extra,
    ]
    r = subprocess.run(
        [python, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=subprocess_env(),
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line, f"probe printed nothing (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(line[6:]) | {"stderr": r.stderr}


def test_agent_never_imports_tensorflow(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, subscriber
) -> None:
    sub = subscriber(["edge/r1/predictions"])
    out = _probe(sys.executable, mosquitto, tmp_path, coral)  # this venv HAS tensorflow installed
    assert out["rc"] == 0, out["stderr"]
    assert out["heavy"] == [], f"the agent imported {out['heavy'][:5]}"
    assert "ai_edge_litert" in out["runtimes"]
    sub.wait(lambda s: s.on("edge/r1/predictions"), 10, "prediction")


def test_agent_runs_with_tflite_runtime_2_14(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, subscriber
) -> None:
    python = os.environ.get("EDGE_TFLITE_RUNTIME_PYTHON")
    assert python, (
        "EDGE_TFLITE_RUNTIME_PYTHON is not set: it must name the python of a venv with "
        "tflite-runtime==2.14.0 and numpy<2 (./dev.sh test sets it; locally export "
        "EDGE_TFLITE_RUNTIME_PYTHON=/work/venv-tflite/bin/python)"
    )
    assert Path(python).exists(), f"EDGE_TFLITE_RUNTIME_PYTHON={python} does not exist (run ./dev.sh setup)"
    sub = subscriber(["edge/r1/predictions", "edge/r1/status"])
    out = _probe(python, mosquitto, tmp_path, coral, "--runtime", "tflite_runtime", "--top-k", "3")
    assert out["rc"] == 0, out["stderr"]
    assert (
        out["heavy"] == [] and "tflite_runtime" in out["runtimes"] and "ai_edge_litert" not in out["runtimes"]
    )
    pred = sub.wait(lambda s: s.json("edge/r1/predictions"), 10, "prediction")[0]
    assert any(c["index"] in CAT_CLASSES for c in pred["top_k"]), pred
    status = sub.json("edge/r1/status")[0]
    assert status["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}, status["runtime"]
    numpy_version = subprocess.run(
        [python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True
    ).stdout
    assert numpy_version.startswith("1."), numpy_version


def test_camera_without_opencv_says_what_to_install(tmp_path: Path, coral: Path) -> None:
    # cv2 is an optional extra: block it so the test means the same with or without it installed
    code = (
        "import sys; sys.modules['cv2'] = None\nfrom edge.agent.cli import main\nsys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "run",
            "--model",
            str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
            "--source",
            "camera:0",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--device-id",
            "cam",
            "--state-dir",
            str(tmp_path / "s"),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert r.returncode == 2, r.stderr
    assert (
        "needs OpenCV" in r.stderr and "edge-ml-toolkit[camera]" in r.stderr and "Traceback" not in r.stderr
    )
