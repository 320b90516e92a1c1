"""aarch64 bundles installed into an arm64 Debian root built by the recipe, run under qemu-aarch64-static."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.flash.helpers import MOBILENET, MOBILENET_TPU, ROOT, sh

RUN_IN_ROOT = ROOT / "device-images" / "run-in-root.sh"
PREFIX = "/opt/edge-agent"
EXPECT = {"ai-edge-litert": ("ai_edge_litert", "2.3.0", 2), "tflite-runtime": ("tflite_runtime", "2.14.0", 1)}

pytestmark = pytest.mark.slow


def elf_machine(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF"
    return int.from_bytes(head[18:20], "little")


def in_root(root: Path, *cmd: str, timeout: float = 300):
    return sh("bash", RUN_IN_ROOT, root, *cmd, check=False, timeout=timeout)


@pytest.mark.parametrize("runtime", ["ai-edge-litert", "tflite-runtime"])
def test_bundle_installs_into_arm64_root_and_runs_under_qemu(arm64_installed, runtime: str) -> None:
    root, built = arm64_installed(runtime)
    rt_name, rt_version, numpy_major = EXPECT[runtime]
    assert elf_machine(root / "usr" / "bin" / "python3.11") == 0xB7  # EM_AARCH64: really an arm64 root
    current = root / PREFIX.lstrip("/") / "current"
    assert os.readlink(current) == f"releases/{built.manifest.bundle_id}"
    # install.sh's self-check ran the model once in the root's aarch64 Python before switching
    check = json.loads((current / "selfcheck.json").read_text())
    assert check["ok"] and check["arch"] == "aarch64" and check["python"] == "3.11"
    assert check["runtime"] == {"name": rt_name, "version": rt_version}
    assert int(check["numpy"].split(".")[0]) == numpy_major
    assert check["models"] == [dict(check["models"][0], file=f"models/{MOBILENET}", outputs=[[1, 1001]])]
    # systemd wiring for first boot, and nothing of the build host left behind
    unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    assert f"ExecStart={PREFIX}/bin/edge-agent run --config {PREFIX}/current/config/agent.toml" in unit
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/edge-agent.service"
    assert (root / "etc/sysusers.d/edge-agent.conf").is_file()
    assert not list((root / "usr/libexec").glob(".edge-flash-qemu*"))
    cfg = (current / "config" / "agent.toml").read_text()
    assert (
        'state_dir = "/var/lib/edge-agent"' in cfg
        and f"{PREFIX}/releases/{built.manifest.bundle_id}/models" in cfg
    )
    # the runtime through edge.model.runtime.load_model, as the agent will call it: no Coral here, so the
    # Edge TPU model falls back to its CPU twin and says so
    code = (
        "import json, platform, numpy as np; from edge.model.runtime import load_model\n"
        f"m = load_model('{PREFIX}/current/models/{MOBILENET_TPU}')\n"
        "x = np.zeros(m.inputs[0].shape, m.inputs[0].dtype); m.interpreter.set_tensor(m.inputs[0].index, x)\n"
        "m.interpreter.invoke(); y = m.interpreter.get_tensor(m.outputs[0].index)\n"
        "print(json.dumps({'arch': platform.machine(), 'runtime': m.runtime.name, 'file': m.path.name,"
        " 'notes': m.notes, 'shape': list(y.shape), 'dtype': str(y.dtype)}))"
    )
    proc = in_root(root, f"{PREFIX}/current/venv/bin/python", "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["arch"] == "aarch64" and out["runtime"] == rt_name and out["file"] == MOBILENET
    assert out["shape"] == [1, 1001] and out["dtype"] == "uint8"
    assert any("fell back to the CPU twin" in n for n in out["notes"])


@pytest.mark.parametrize("runtime", ["ai-edge-litert", "tflite-runtime"])
def test_agent_runs_in_arm64_root_and_publishes_to_loopback_broker(
    arm64_installed, runtime: str, mosquitto, coral: Path
) -> None:
    root, built = arm64_installed(runtime)
    rt_name, rt_version, _ = EXPECT[runtime]
    inputs = root / "tmp" / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(coral / "cat.bmp", inputs / "cat.bmp")
    device = f"pi-qemu-{runtime}"
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto.port),
            "-v",
            "-q",
            "1",
            "-t",
            f"edge/{device}/#",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        # bin/edge-agent is a #!/bin/sh wrapper; under qemu without binfmt a script cannot exec the
        # aarch64 Python, so the test runs the line the wrapper execs, with the installed config.
        proc = in_root(
            root,
            f"{PREFIX}/current/venv/bin/python",
            "-m",
            "edge",
            "run",
            "--config",
            f"{PREFIX}/current/config/agent.toml",
            "--source",
            "/tmp/inputs/cat.bmp",
            "--broker",
            mosquitto.url,
            "--device-id",
            device,
            "--once",
            "--metrics-interval",
            "0",
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        time.sleep(1.0)
    finally:
        sub.terminate()
        out, _ = sub.communicate(timeout=10)
    msgs: dict[str, list[str]] = {}
    for line in out.splitlines():
        topic, _, payload = line.partition(" ")
        msgs.setdefault(topic.rsplit("/", 1)[-1], []).append(payload)
    assert msgs["availability"][0] == "online" and msgs["availability"][-1] == "offline"
    status = json.loads(msgs["status"][0])
    assert status["arch"] == "aarch64" and status["device"] == device
    assert status["runtime"] == {"name": rt_name, "version": rt_version}
    # the bundled Edge TPU model, falling back to its bundled CPU twin (no Coral under qemu)
    assert status["model_path"].endswith(MOBILENET) and any("CPU twin" in n for n in status["notes"])
    assert status["model_sha256"] == built.manifest.models[1].sha256
    pred = json.loads(msgs["predictions"][0])
    assert pred["source"] == "cat.bmp" and pred["kind"] == "classifier"
    assert "cat" in pred["top_k"][0]["label"] and 281 <= pred["top_k"][0]["index"] <= 287
