"""edge-agent run end to end: a real mosquitto, real runtimes, read back with mosquitto_sub and paho."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from PIL import Image

from tests.support.agent import run_agent
from tests.support.broker import Mosquitto
from tests.support.mqtt import json_lines, mosquitto_sub
from tests.support.process import run_module, subprocess_env

CAT_CLASSES = range(282, 287)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _run_once(
    mosquitto: Mosquitto, tmp_path: Path, model: Path, source: Path, *extra: str, device: str = "t1"
) -> subprocess.CompletedProcess[str]:
    return run_agent(
        mosquitto,
        device,
        tmp_path / "state",
        "--model",
        str(model),
        "--source",
        str(source),
        "--once",
        "--flush-timeout",
        "10",
        *extra,
        timeout=120,
    )


def test_coral_mobilenet_puts_a_cat_in_the_top_3(mosquitto: Mosquitto, tmp_path: Path, coral: Path) -> None:
    sub = mosquitto_sub(mosquitto, "edge/t1/predictions", "-V", "mqttv5", "-C", "1", "-W", "60")
    r = _run_once(
        mosquitto,
        tmp_path,
        coral / "mobilenet_v1_0.25_128_quant.tflite",
        coral / "cat.bmp",
        "--labels",
        str(coral / "imagenet_labels.txt"),
        "--top-k",
        "3",
    )
    assert r.returncode == 0, r.stderr
    (pred,) = json_lines(sub.communicate(timeout=60)[0])
    assert pred["schema"] == 1 and pred["device"] == "t1" and pred["ts"].endswith("Z")
    assert pred["source"] == "cat.bmp" and pred["kind"] == "classifier" and isinstance(pred["seq"], int)
    assert len(pred["top_k"]) == 3 and any(c["index"] in CAT_CLASSES for c in pred["top_k"]), pred
    assert any("cat" in c["label"] for c in pred["top_k"])
    assert set(pred["latency_ms"]) == {"preprocess", "inference", "postprocess", "total"}
    # retained: the status describes the model, availability says the agent left cleanly
    status = json.loads(
        subprocess.run(
            ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge/t1/status", "-C", "1", "-W", "10"],
            capture_output=True,
            text=True,
        ).stdout
    )
    assert status["model_sha256"] == pred["model_sha256"] and status["runtime"]["name"] == "ai_edge_litert"
    assert status["model"]["inputs"][0]["shape"] == [1, 128, 128, 3] and status["delegate"] == "cpu"
    assert status["arch"] and "board" in status and status["notes"] == []
    avail = subprocess.run(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge/t1/availability", "-C", "1", "-W", "10"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert avail == "offline"


def test_keras_lstm_says_nine(mosquitto: Mosquitto, tmp_path: Path, coral: Path) -> None:
    sub = mosquitto_sub(mosquitto, "edge/t1/predictions", "-V", "mqttv5", "-C", "1", "-W", "60")
    r = _run_once(mosquitto, tmp_path, coral / "keras_lstm_mnist_ptq.tflite", coral / "mnist_nine.bmp")
    assert r.returncode == 0, r.stderr
    (pred,) = json_lines(sub.communicate(timeout=60)[0])
    assert pred["top_k"][0]["index"] == 9 and pred["top_k"][0]["score"] > 0.9, pred


def test_edgetpu_model_falls_back_to_its_cpu_twin(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture
) -> None:
    sub = capture("edge/t1/#")
    r = _run_once(
        mosquitto, tmp_path, coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", coral / "cat.bmp"
    )
    assert r.returncode == 0, r.stderr
    sub.wait(lambda s: s.on("edge/t1/predictions"), 10, "a prediction")
    (status,) = sub.json("edge/t1/status")
    assert status["delegate"] == "cpu" and status["model_path"].endswith("mobilenet_v1_0.25_128_quant.tflite")
    assert any("fell back to the CPU twin" in n for n in status["notes"]), status["notes"]
    assert any(c["index"] in CAT_CLASSES for c in sub.json("edge/t1/predictions")[0]["top_k"][:3])


def test_model_errors_are_explained_with_a_fix(mosquitto: Mosquitto, tmp_path: Path, coral: Path) -> None:
    lone = tmp_path / "keras_lstm_mnist_ptq_edgetpu.tflite"  # no CPU twin beside it
    shutil.copy(coral / lone.name, lone)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    cases = [
        (lone, (), ["No Edge TPU was detected", "keras_lstm_mnist_ptq.tflite"]),
        (coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", ("--delegate", "edgetpu"), ["Edge TPU"]),
        (coral / "model_invoking_error.tflite", (), ["fake-op-double"]),
        (empty, (), ["0 bytes"]),
    ]
    for model, extra, needles in cases:
        r = _run_once(mosquitto, tmp_path, model, coral / "cat.bmp", *extra)
        assert r.returncode == 2, (model, r.stderr)
        assert "fix:" in r.stderr and all(n in r.stderr for n in needles), (model, r.stderr)
        assert "Traceback" not in r.stderr


def test_bad_inputs_are_reported_and_the_agent_keeps_going(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    cat = (coral / "cat.bmp").read_bytes()
    bad = {
        "a_empty.jpg": b"",
        "b_truncated.bmp": cat[: len(cat) // 2],
        "c_corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8,
        "d_junk.txt": b"this is not an image\n",
    }
    for name, data in bad.items():
        (d / name).write_bytes(data)
    Image.new("RGB", (2000, 1000), (10, 200, 30)).save(d / "e_huge.png")  # over max_image_pixels below
    Image.new("L", (1, 1), 128).save(d / "f_tiny.png")  # wrong size for the model: resized, works
    Image.new("RGB", (500, 7), (1, 2, 3)).save(d / "g_wide.jpg")
    (d / "h_cat.bmp").write_bytes(cat)
    sub = capture("edge/t1/predictions", "edge/t1/errors")
    env = subprocess_env(EDGE_PREPROCESS_MAX_IMAGE_PIXELS="1000000")
    args = ("--model", coral / "mobilenet_v1_0.25_128_quant.tflite", "--source", d, "--once")
    r = run_agent(mosquitto, "t1", tmp_path / "state", *args, env=env)
    assert r.returncode == 0, r.stderr
    sub.wait(lambda s: len(s.messages) >= 8, 10, "8 messages")
    errors = {e["source"]: e for e in sub.json("edge/t1/errors")}
    assert set(errors) == set(bad) | {"e_huge.png"}, errors
    assert "empty" in errors["a_empty.jpg"]["error"] and "truncated" in errors["b_truncated.bmp"]["fix"]
    assert "over the limit" in errors["e_huge.png"]["error"]
    assert all(e["fix"] and e["schema"] == 1 for e in errors.values())
    preds = sub.json("edge/t1/predictions")
    assert [p["source"] for p in preds] == ["f_tiny.png", "g_wide.jpg", "h_cat.bmp"]
    assert any(c["index"] in CAT_CLASSES for c in preds[-1]["top_k"][:3])
    for name in errors:
        assert name in r.stderr  # one log line per bad input
    # a second run finds nothing new: the directory record survives restarts
    r = run_agent(mosquitto, "t1", tmp_path / "state", *args, env=env)
    assert r.returncode == 0 and "stopped after 0 predictions" in r.stderr, r.stderr


def test_once_with_the_broker_down_spools_and_exits_0(tmp_path: Path, coral: Path) -> None:
    broker = Mosquitto(workdir=tmp_path)  # port chosen, nothing listening yet
    from tests.support.broker import free_port

    broker.port = free_port()
    started = time.monotonic()
    model = ("--model", coral / "mobilenet_v1_0.25_128_quant.tflite", "--once")
    r = run_agent(
        broker, "t1", tmp_path / "state", *model, "--source", coral / "cat.bmp", "--flush-timeout", "1"
    )
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 30
    assert "1 messages stay in the spool" in r.stderr, r.stderr
    # the next start, with the broker up, delivers it (marked historical)
    broker.start()
    try:
        sub = mosquitto_sub(broker, "edge/t1/predictions", "-C", "1", "-W", "30")
        empty = tmp_path / "empty"
        empty.mkdir()
        r = run_agent(broker, "t1", tmp_path / "state", *model, "--source", empty)
        assert r.returncode == 0, r.stderr
        (pred,) = json_lines(sub.communicate(timeout=30)[0])
        assert pred["source"] == "cat.bmp" and pred["historical"] is True and pred["seq"] == 1
    finally:
        broker.stop()


def test_python_dash_m_edge_is_edge_agent() -> None:
    r = run_module("edge", "--version", timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("edge-agent "), r
    from edge.agent.cli import main

    assert main.__module__ == "edge.agent.cli"


def test_usage_errors_exit_2_with_a_fix(tmp_path: Path, coral: Path) -> None:
    model = str(coral / "mobilenet_v1_0.25_128_quant.tflite")
    cases = [
        (["--source", "mqtt", "--broker", "http://host:1"], "unsupported scheme 'http'"),
        (["--source", str(tmp_path / "missing"), "--broker", "mqtt://h:1"], "neither an existing file"),
        (["--source", "mqtt", "--broker", "mqtt://h:1", "--top-k", "0"], "postprocess.top_k = 0"),
        (["--source", "mqtt", "--broker", "mqtt://h:1", "--device-id", "a/b"], "mqtt.device_id = 'a/b'"),
    ]
    for args, needle in cases:
        r = run_module("edge", "run", "--model", model, "--state-dir", str(tmp_path / "s"), *args, timeout=60)
        assert r.returncode == 2 and needle in r.stderr and "fix:" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_delegate_seam_in_process(mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture) -> None:
    """The Edge TPU loader is a seam: a stand-in that reports a specific failure (no Coral here)."""
    from edge.agent.app import Agent
    from edge.agent.config import load_config
    from edge.errors import DelegateError

    class UnpluggedCoral:
        name = "edgetpu"

        def load(self, runtime, options):  # the DelegateLoader protocol
            raise DelegateError("Edge TPU at usb:0 stopped responding (stand-in)", "replug the Coral")

    sub = capture("edge/s1/status", "edge/s1/predictions")
    cfg = load_config(
        None,
        environ={},
        flags={
            "model": {"path": str(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")},
            "source": {"spec": str(coral / "cat.bmp")},
            "mqtt": {"broker": mosquitto.url, "device_id": "s1"},
            "state_dir": str(tmp_path / "state"),
            "once": True,
            "metrics": {"interval_s": 0},
        },
    )
    agent = Agent(cfg, delegates={"edgetpu": UnpluggedCoral()})
    assert agent.run() == 0
    status = sub.wait(lambda s: s.json("edge/s1/status"), 10, "status")[0]
    assert any("usb:0 stopped responding (stand-in)" in n and "CPU twin" in n for n in status["notes"]), (
        status
    )
    assert sub.wait(lambda s: s.json("edge/s1/predictions"), 10, "prediction")[0]["source"] == "cat.bmp"
