"""Config validation (issue 12, item 4): every problem named with its key path, value and message."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from edge.agent import statedir
from edge.agent.cli import check_update_keys
from edge.agent.config import (
    AgentConfig,
    CommandsConfig,
    ConfigError,
    MqttConfig,
    check_file,
    env_names,
    env_overrides,
    load_config,
    unknown_variables,
)
from edge.errors import EdgeError
from edge.model.guard import GuardLimits
from tests.support import ROOT
from tests.support.process import run_module, subprocess_env


def problems_of(**sections: object) -> dict[str, tuple[object, str]]:
    with pytest.raises(ConfigError) as err:
        load_config(None, flags=sections, environ={})
    return {k: (v, m) for k, v, m in err.value.problems}


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("preprocess", "mean", float("nan")),
        ("preprocess", "std", float("inf")),
        ("preprocess", "mean", "-inf"),  # text, as from an environment variable
        ("mqtt", "backoff_max_s", float("nan")),
        ("spool", "max_age_s", float("inf")),
        ("postprocess", "threshold", float("nan")),
    ],
)
def test_non_finite_numbers_are_refused(section: str, key: str, value: object) -> None:
    found = problems_of(**{section: {key: value}})
    assert list(found) == [f"{section}.{key}"]
    msg = found[f"{section}.{key}"][1]
    assert "finite" in msg or "Expected `float`" in msg, msg


def test_non_finite_numbers_are_refused_in_toml_and_by_check_config(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text("[preprocess]\nmean = nan\nstd = inf\n")
    found = [(k, m) for k, _, m in check_file(f)]
    assert found == [
        ("preprocess.mean", "must be a finite number (not nan or inf)"),
        ("preprocess.std", "must be a finite number (not nan or inf)"),
    ]
    with pytest.raises(ValueError, match="cpu_s: must be a finite number"):
        GuardLimits(cpu_s=float("inf"))


def test_std_zero_is_refused() -> None:
    assert problems_of(preprocess={"std": 0}) == {"preprocess.std": (0, "must not be 0")}


def test_backoff_min_must_not_exceed_max() -> None:
    found = problems_of(mqtt={"backoff_min_s": 30, "backoff_max_s": 5})
    assert found == {"mqtt.backoff_min_s": (30, "must not exceed backoff_max_s (5)")}
    with pytest.raises(ValueError, match="backoff_min_s: must not exceed backoff_max_s"):
        MqttConfig(backoff_min_s=30.0, backoff_max_s=5.0)


@pytest.mark.parametrize(
    "url,needle",
    [
        ("http://broker.lan:1883", "unsupported scheme 'http'"),
        ("ws://broker.lan:9001", "websockets are not supported"),
        ("mqtt://broker.lan:99999", "the port is not a number between 0 and 65535"),
        ("mqtt://broker.lan:0", "port 0 is not a valid broker port"),
        ("mqtt://:1883", "the host is missing"),
        ("broker.lan:1883", "the scheme is missing"),
    ],
)
def test_broker_url_scheme_host_and_port_are_checked(url: str, needle: str) -> None:
    found = problems_of(mqtt={"broker": url})
    assert list(found) == ["mqtt.broker"]
    assert found["mqtt.broker"][0] == url and needle in found["mqtt.broker"][1]


def test_unknown_disabled_action_names_the_nearest_valid_one() -> None:
    found = problems_of(commands={"disabled": ["bench", "model_set", "pnig"]})
    assert set(found) == {"commands.disabled[1]", "commands.disabled[2]"}
    assert found["commands.disabled[1]"][0] == "model_set"
    assert "unknown action (did you mean 'model/set'?" in found["commands.disabled[1]"][1]
    assert "did you mean 'ping'?" in found["commands.disabled[2]"][1]
    ok = load_config(None, flags={"commands": {"disabled": ["model/set", "*"]}}, environ={})
    assert not ok.commands.allows("model/set") and ok.commands.allows("ping")
    with pytest.raises(ValueError, match="disabled\\[0\\]: unknown action"):
        CommandsConfig(disabled=["model_set"])


def test_check_config_lists_every_problem_of_every_section_in_one_run(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        'bogus = 1\n[mqtt]\nbroker = "http://user:hunter2@broker:1883"\nkeepalive_s = 1\n'
        'password = "hunter2"\nbackoff_min_s = 9.0\nbackoff_max_s = 3.0\n'
        '[preprocess]\nmean = nan\nstd = 0.0\n[commands]\ndisabled = ["model_set"]\n'
        "[ota.guard]\ntimeout_s = -1\n"
    )
    keys = [k for k, _, _ in check_file(f)]
    # mqtt.keepalive_s fails on its own: the relations inside [mqtt] are checked once its values are fine
    assert keys == [
        "bogus",
        "mqtt.broker",
        "mqtt.keepalive_s",
        "preprocess.mean",
        "preprocess.std",
        "ota.guard.timeout_s",
        "commands.disabled[0]",
    ]
    r = run_module("edge", "check-config", str(f), timeout=60)
    assert r.returncode == 1 and "7 problem(s)" in r.stderr, r
    assert "hunter2" not in r.stderr + r.stdout
    assert "bogus = 1: unknown key" in r.stderr


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    f = tmp_path / "secret.toml"
    f.write_text('[mqtt]\nbroker = "ftp://agent:hunter2@broker.lan:1883"\npassword = 12345\n')
    found = {k: (v, m) for k, v, m in check_file(f)}
    assert found["mqtt.password"] == ("**********", "Expected `str`, got `int`")
    r = run_module("edge", "check-config", str(f), timeout=60)
    assert r.returncode == 1
    assert "hunter2" not in r.stderr and "12345" not in r.stderr
    assert "mqtt.broker = 'ftp://agent:***@broker.lan:1883'" in r.stderr, r.stderr
    assert "mqtt.password = '**********'" in r.stderr


def test_environment_names_are_one_underscore_per_level_and_typos_are_warned() -> None:
    names = {name for name, _, _ in env_names()}
    assert {
        "EDGE_MQTT_BROKER",
        "EDGE_STATE_DIR",
        "EDGE_OTA_GUARD_TIMEOUT_S",
        "EDGE_COMMANDS_DISABLED",
    } <= names
    cfg = load_config(
        None,
        environ={
            "EDGE_MQTT_BROKER": "mqtt://env:1884",
            "EDGE_COMMANDS_DISABLED": "bench, model/set",
            "EDGE_OTA_GUARD_TIMEOUT_S": "5",
        },
    )
    assert cfg.mqtt.broker == "mqtt://env:1884" and cfg.commands.disabled == ["bench", "model/set"]
    assert cfg.ota.guard.timeout_s == 5.0
    assert env_overrides({"EDGE_OTA_PUBLIC_KEYS": '["a.pub", "b.pub"]'}) == {
        "ota": {"public_keys": ["a.pub", "b.pub"]}
    }
    warnings = unknown_variables(
        {
            "EDGE_MQTT__BROKER": "x",
            "EDGE_POSTPROCESS_TOPK": "3",
            "EDGE_TFLITE_RUNTIME_PYTHON": "/p",
            "HOME": "/h",
        }
    )
    assert len(warnings) == 2
    assert (
        "EDGE_MQTT__BROKER is not a config key and is ignored (did you mean EDGE_MQTT_BROKER?)" in warnings[0]
    )
    assert "(did you mean EDGE_POSTPROCESS_TOP_K?)" in warnings[1]


def test_documented_variable_names_are_the_accepted_ones() -> None:
    """docs/flash.md and the systemd unit show names the agent reads (EDGE_MQTT__BROKER was silently ignored)."""
    import re

    names = {name for name, _, _ in env_names()}
    for doc in (ROOT / "docs" / "flash.md", ROOT / "edge" / "flash" / "templates" / "edge-agent.service"):
        shown = set(re.findall(r"EDGE_[A-Z_]*[A-Z]=", doc.read_text()))
        assert shown, doc
        assert {s[:-1] for s in shown} <= names, (doc, shown)


def test_unknown_variables_are_warned_at_start(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--source", str(tmp_path / "none"), "--model", "m.tflite"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(EDGE_MQTT__BROKER="mqtt://x:1"),
    )
    assert r.returncode == 2  # the missing source, after the warning
    assert "EDGE_MQTT__BROKER is not a config key and is ignored (did you mean EDGE_MQTT_BROKER?)" in r.stderr


def test_default_state_dir_is_per_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    a = load_config(None, flags={"mqtt": {"device_id": "devA"}}, environ={})
    b = load_config(None, flags={"mqtt": {"device_id": "devB"}}, environ={})
    assert a.resolved_state_dir() == tmp_path / ".local/state/edge-agent/devA"
    assert b.resolved_state_dir() == tmp_path / ".local/state/edge-agent/devB"
    explicit = load_config(None, flags={"state_dir": str(tmp_path / "s")}, environ={})
    assert explicit.resolved_state_dir() == tmp_path / "s"


def _legacy_spool(base: Path, *topics: str) -> None:
    base.mkdir(parents=True)
    con = sqlite3.connect(base / "spool.db")
    con.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT)")
    con.executemany("INSERT INTO messages (topic) VALUES (?)", [(t,) for t in topics])
    con.commit()
    con.close()
    (base / "sources.db").write_bytes(b"record")


def test_shared_state_dir_moves_to_its_own_device(tmp_path: Path) -> None:
    base = tmp_path / "edge-agent"
    _legacy_spool(base, "edge/devA/predictions", "edge/devA/status")
    notes = statedir.prepare(base / "devA", "devA", "edge", default_base=base)
    assert notes and "moved the old shared state directory" in notes[0]
    assert (base / "devA" / "spool.db").exists() and (base / "devA" / "sources.db").exists()
    assert not (base / "spool.db").exists()
    assert statedir.owner(base / "devA") == "devA"
    # once: the next start finds nothing to move
    assert statedir.prepare(base / "devA", "devA", "edge", default_base=base) == []


def test_shared_state_dir_of_another_device_is_never_mixed_in(tmp_path: Path) -> None:
    base = tmp_path / "edge-agent"
    _legacy_spool(base, "edge/devA/predictions")
    notes = statedir.prepare(base / "devB", "devB", "edge", default_base=base)
    assert len(notes) == 1 and "devA" in notes[0] and "left there" in notes[0]
    assert (base / "spool.db").exists() and not (base / "devB" / "spool.db").exists()
    assert statedir.owner(base / "devB") == "devB"
    # devA, started later, takes its own state (devB's directory is not part of it)
    statedir.prepare(base / "devA", "devA", "edge", default_base=base)
    assert (base / "devA" / "spool.db").exists() and (base / "devB" / OWNER_FILE).exists()


OWNER_FILE = statedir.OWNER


def test_a_state_dir_owned_by_another_device_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "state"
    statedir.prepare(d, "devA", "edge")
    with pytest.raises(EdgeError, match="belongs to device 'devA', this agent is 'devB'"):
        statedir.prepare(d, "devB", "edge")
    legacy = tmp_path / "legacy"
    _legacy_spool(legacy, "edge/devA/predictions")
    with pytest.raises(EdgeError, match="belongs to device 'devA'"):
        statedir.prepare(legacy, "devB", "edge")


def test_trust_keys_are_checked_at_start_up(tmp_path: Path) -> None:
    from edge.ota import keys

    priv = tmp_path / "k"
    pub = tmp_path / "k.pub"
    key = keys.crypto().ed25519.Ed25519PrivateKey.generate()
    s = keys.crypto().serialization
    priv.write_bytes(key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    check_update_keys([str(pub)])  # fine
    check_update_keys([])  # no key: updates are refused later with reason no_key, the agent starts
    with pytest.raises(EdgeError, match=r"ota.public_keys\[0\] .*cannot read the update public key"):
        check_update_keys([str(tmp_path / "missing.pub")])
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key at all")
    with pytest.raises(EdgeError, match=r"ota.public_keys\[1\] .*not an Ed25519 public key"):
        check_update_keys([str(pub), str(garbage)])
    with pytest.raises(EdgeError, match="is a private key: a device must hold only the public key"):
        check_update_keys([str(priv)])


@pytest.mark.parametrize("content", ["garbage", "private"])
def test_agent_refuses_to_start_with_a_bad_update_key(tmp_path: Path, content: str) -> None:
    key = tmp_path / "update.pub"
    key.write_text(
        "garbage"
        if content == "garbage"
        else "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "run",
            "--source",
            "mqtt",
            "--model",
            "m.tflite",
            "--update-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert r.returncode == 2, r
    assert "ota.public_keys[0]" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr


def test_records_refuse_unknown_fields_and_decode_with_msgspec() -> None:
    cfg = msgspec.toml.decode(b'[mqtt]\nprefix = "p"\n', type=AgentConfig, dec_hook=None)
    assert cfg.mqtt.prefix == "p"
    with pytest.raises(msgspec.ValidationError, match="unknown field `prefx`"):
        msgspec.toml.decode(b'[mqtt]\nprefx = "p"\n', type=AgentConfig)
    with pytest.raises(msgspec.ValidationError, match="must be a finite number"):
        msgspec.toml.decode(b"[preprocess]\nmean = nan\n", type=AgentConfig)
    with pytest.raises(msgspec.ValidationError, match="Number out of range"):
        msgspec.json.decode(b'{"preprocess": {"mean": 1e400}}', type=AgentConfig)


def test_set_command_parameters_share_the_config_constraints() -> None:
    from edge.agent.config import SettingsUpdate
    from edge.validation import DecodeError, decode

    assert decode(SettingsUpdate, {"top_k": 3}) == SettingsUpdate(top_k=3)
    with pytest.raises(DecodeError) as err:
        decode(SettingsUpdate, {"top_k": 0, "threshold": float("nan"), "topk": 1})
    assert err.value.problems == [
        ("topk", 1, "unknown key (did you mean 'top_k'? valid keys: top_k, threshold, iou, max_detections)"),
        ("top_k", 0, "Expected `int` >= 1"),
        ("threshold", pytest.approx(float("nan"), nan_ok=True), "Expected `float` >= 0.0"),
    ]


def test_agent_refuses_to_start_with_update_keys_but_no_cryptography(tmp_path: Path) -> None:
    from edge.ota import keys

    key = keys.crypto().ed25519.Ed25519PrivateKey.generate()
    s = keys.crypto().serialization
    pub = tmp_path / "update.pub"
    pub.write_bytes(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    # cryptography made unimportable in that process, as on a device installed without the signing extra
    probe = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from edge.agent.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["run", "--source", "mqtt", "--model", "m.tflite", "--update-key", str(pub)]
    r = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert r.returncode == 2, r
    assert "ota.public_keys[0]" in r.stderr and "'cryptography' package" in r.stderr, r.stderr


def test_an_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgeError, match="cannot use the state directory"):
        statedir.prepare(blocker / "state", "devA", "edge")


def test_docs_list_every_key_with_its_variable() -> None:
    text = (ROOT / "docs" / "agent.md").read_text()
    missing = [
        f"{'.'.join(path)} ({name})"
        for name, path, _ in env_names()
        if f"| `{'.'.join(path)}` |" not in text or f"`{name}`" not in text
    ]
    assert missing == [], "docs/agent.md's key table lacks these keys"


def test_check_config_warns_about_unknown_variables_too(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[source]\nspec = "mqtt"\n')
    r = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(EDGE_SOURCE_SPC="mqtt"),
    )
    assert r.returncode == 0 and "ok" in r.stdout, r
    assert "warning: environment variable EDGE_SOURCE_SPC" in r.stderr and "EDGE_SOURCE_SPEC?" in r.stderr
