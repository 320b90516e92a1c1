"""edge-flash ssh/rollback against a real sshd on a loopback port, key auth, a throw-away prefix, --no-systemd.

The ssh target is this x86_64 machine: an x86_64 bundle is the good case, an
aarch64 bundle the refused mismatch.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.flash.ssh import DeployError, wait_for_online
from tests.flash.helpers import MOBILENET, clean_env, rewrite, sh
from tests.support.broker import free_port, wait_port
from tests.support.process import run_module


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    d = tmp_path_factory.mktemp("sshd")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host_key")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )
    assert wait_port("127.0.0.1", port, timeout=10), (d / "sshd.log").read_text()
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    yield {
        "host": f"{user}@127.0.0.1",
        "port": str(port),
        "key": str(d / "client_key"),
        "known_hosts": str(d / "known_hosts"),
        "dir": str(d),
    }
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def flash(sshd: dict[str, str], cmd: str, prefix: Path, *extra: str):
    return run_module(
        "edge.flash",
        cmd,
        sshd["host"],
        "--port",
        sshd["port"],
        "--identity",
        sshd["key"],
        "--ssh-config",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={sshd['known_hosts']}",
        "--prefix",
        str(prefix),
        "--no-systemd",
        *extra,
        timeout=600,
    )


def leftovers() -> set[str]:
    return {p.name for p in Path("/var/tmp").glob("edge-flash.*")}


@pytest.mark.slow
def test_deploy_then_update_then_rollback(sshd, make_bundle, tmp_path: Path, mosquitto) -> None:
    a, b = make_bundle("x86_64"), make_bundle("x86_64", device_id="second")
    prefix = tmp_path / "target"
    before = leftovers()
    first = flash(sshd, "ssh", prefix, "--bundle", str(a.path))
    assert first.returncode == 0, first.stderr
    assert os.readlink(prefix / "current") == f"releases/{a.manifest.bundle_id}"
    check = json.loads((prefix / "current" / "selfcheck.json").read_text())
    assert check["ok"] and check["arch"] == "x86_64" and check["models"][0]["file"] == f"models/{MOBILENET}"
    assert "copying" in first.stderr and f"release {a.manifest.bundle_id}" in first.stderr
    assert not leftovers() - before  # our upload directory is cleaned up (others may come and go)
    assert f"release {a.manifest.bundle_id} is current at {prefix} (previous: none)" in first.stdout

    second = flash(sshd, "ssh", prefix, "--bundle", str(b.path))
    assert second.returncode == 0, second.stderr
    assert os.readlink(prefix / "current") == f"releases/{b.manifest.bundle_id}"
    assert os.readlink(prefix / "previous") == f"releases/{a.manifest.bundle_id}"

    # the installed agent, started as the unit would (no systemd here), is what --wait-online waits for
    agent = subprocess.Popen(
        [
            str(prefix / "bin" / "edge-agent"),
            "run",
            "--config",
            str(prefix / "current" / "config" / "agent.toml"),
            "--broker",
            mosquitto.url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "agent.log", "wb"),
        env=clean_env(),
        cwd=tmp_path,
    )
    try:
        waited = flash(
            sshd,
            "ssh",
            prefix,
            "--bundle",
            str(b.path),
            "--wait-online",
            mosquitto.url,
            "--wait-timeout",
            "120",
        )
        assert waited.returncode == 0, waited.stderr + (tmp_path / "agent.log").read_text()
        assert "already installed" in waited.stderr and "second is online, running" in waited.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=30)

    back = flash(sshd, "rollback", prefix)
    assert back.returncode == 0, back.stderr
    assert os.readlink(prefix / "current") == f"releases/{a.manifest.bundle_id}"
    assert os.readlink(prefix / "previous") == f"releases/{b.manifest.bundle_id}"
    assert "rolled back" in back.stderr


def test_arch_mismatch_is_refused_before_copying(sshd, make_bundle, tmp_path: Path) -> None:
    prefix = tmp_path / "target"
    before = leftovers()
    proc = flash(sshd, "ssh", prefix, "--bundle", str(make_bundle("aarch64").path))
    assert proc.returncode == 2
    assert "the bundle is for aarch64 with Python 3.11, but" in proc.stderr and "is x86_64" in proc.stderr
    assert "edge-flash bundle --arch x86_64" in proc.stderr
    assert not prefix.exists() and not leftovers() - before


def test_corrupt_bundle_is_refused_by_sha256(sshd, make_bundle, tmp_path: Path) -> None:
    a = make_bundle("x86_64")
    prefix = tmp_path / "target"
    bad = rewrite(a.path, tmp_path / "bad.tar.gz", {"requirements.txt": b"evil-package==6.6.6\n"})
    proc = flash(sshd, "ssh", prefix, "--bundle", str(bad))
    assert (
        proc.returncode == 2
        and "failed its sha256 check" in proc.stderr
        and "requirements.txt" in proc.stderr
    )
    assert not prefix.exists()


def test_rollback_with_nothing_to_roll_back(sshd, tmp_path: Path) -> None:
    proc = flash(sshd, "rollback", tmp_path / "nothing")
    assert proc.returncode == 2 and "nothing installed" in proc.stderr


def test_unreachable_host_says_what_to_check(sshd, make_bundle, tmp_path: Path) -> None:
    proc = run_module(
        "edge.flash",
        "ssh",
        sshd["host"],
        "--port",
        str(free_port()),
        "--identity",
        sshd["key"],
        "--ssh-config",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "--prefix",
        str(tmp_path),
        "--no-systemd",
        "--bundle",
        str(make_bundle("x86_64").path),
        timeout=120,
    )
    assert proc.returncode == 2 and "cannot run commands on" in proc.stderr and "sshd runs" in proc.stderr


def test_wait_online_needs_the_new_model_not_a_stale_status(mosquitto) -> None:
    pub = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-r", "-q", "1"]
    sh(*pub, "-t", "edge/pi1/availability", "-m", "online")
    sh(*pub, "-t", "edge/pi1/status", "-m", json.dumps({"model_sha256": "old"}))
    t0 = time.monotonic()
    with pytest.raises(DeployError, match="online but running another model"):
        wait_for_online(mosquitto.url, "edge", "pi1", {"new"}, timeout=1.5)
    assert time.monotonic() - t0 >= 1.5
    sh(*pub, "-t", "edge/pi1/status", "-m", json.dumps({"model_sha256": "new", "arch": "aarch64"}))
    status = wait_for_online(mosquitto.url, "edge", "pi1", {"new"}, timeout=10)
    assert status["arch"] == "aarch64"
