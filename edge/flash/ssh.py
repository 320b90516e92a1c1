"""Deploy a bundle over SSH with the system's OpenSSH client (so ~/.ssh/config, agents and jump hosts work).

Order matters: the bundle is checked here, then the target's CPU and Python
are probed and a mismatch is refused before a byte is copied; the copy is
checked by sha256 on the device; install.sh checks every file again, installs
a new release beside the running one, self-checks it and only then switches.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.digest import sha256_file
from edge.errors import EdgeError
from edge.flash.manifest import BundleError, Manifest, verify_bundle


class DeployError(EdgeError):
    """The device could not be reached, or refused or failed the install."""


INSTALL_EXIT = {
    3: "the copy on the device failed its sha256 check",
    4: "the bundle is for another CPU or Python",
    5: "there is no previous release to roll back to",
    6: "the new release failed its self-check (runtime import or model run); the running release is unchanged",
}


@dataclass(frozen=True)
class Target:
    host: str
    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()
    ssh_config: Path | None = None
    prefix: str = "/opt/edge-agent"
    systemd: bool = True
    sudo: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Target:
        return cls(
            host=args.host,
            port=args.port,
            identity=args.identity,
            options=tuple(args.ssh_option),
            ssh_config=getattr(args, "ssh_config", None),
            prefix=args.prefix,
            systemd=not args.no_systemd,
            sudo=args.sudo,
        )

    def _common(self, port_flag: str) -> list[str]:
        cmd = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        if self.ssh_config is not None:
            cmd += ["-F", str(self.ssh_config)]
        if self.port:
            cmd += [port_flag, str(self.port)]
        if self.identity is not None:
            cmd += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        for opt in self.options:
            cmd += ["-o", opt]
        return cmd

    def ssh(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", *self._common("-p"), self.host, "--", command]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            raise DeployError("the ssh command is not installed", "apt install openssh-client") from exc
        except subprocess.TimeoutExpired as exc:
            raise DeployError(
                f"ssh {self.host} did not finish within {timeout:.0f} s",
                "check the device (is it swapping? is the SD card failing?)",
            ) from exc

    def scp(self, local: Path, remote: str) -> None:
        argv = ["scp", "-q", *self._common("-P"), str(local), f"{self.host}:{remote}"]
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise DeployError(
                f"copying {local.name} to {self.host}:{remote} failed: {proc.stderr.strip()[-500:]}",
                "check free space on the device (df -h /var/tmp) and the connection",
            )


@dataclass(frozen=True)
class Probe:
    arch: str
    python: str
    uid: int
    systemd: bool
    hostname: str
    extra: dict[str, Any] = field(default_factory=dict)


PROBE = r"""
if [ -x /usr/bin/python3 ]; then P=/usr/bin/python3; else P=$(command -v python3 || true); fi
echo "arch=$(uname -m)"
if [ -n "$P" ]; then echo "python=$("$P" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; else echo python=none; fi
echo "uid=$(id -u)"
if [ -d /run/systemd/system ]; then echo systemd=1; else echo systemd=0; fi
echo "hostname=$(hostname)"
"""


def _say(msg: str) -> None:
    print(f"edge-flash: {msg}", file=sys.stderr, flush=True)


def _unreachable(target: Target, proc: subprocess.CompletedProcess[str]) -> DeployError:
    err = proc.stderr.strip()[-800:]
    fix = (
        "check the host name, the port, that sshd runs, and that your key is in the device's authorized_keys"
    )
    if "Permission denied" in err:
        fix = "authorize your key on the device (ssh-copy-id), or pass --identity KEY"
    elif "Host key verification failed" in err:
        fix = "the device's host key is unknown or changed: ssh to it once by hand, or pass -o StrictHostKeyChecking=accept-new"
    return DeployError(f"cannot run commands on {target.host} over ssh (exit {proc.returncode}): {err}", fix)


def probe(target: Target) -> Probe:
    proc = target.ssh(PROBE, timeout=60)
    if proc.returncode != 0:
        raise _unreachable(target, proc)
    kv = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        return Probe(
            arch=kv["arch"],
            python=kv["python"],
            uid=int(kv["uid"]),
            systemd=kv["systemd"] == "1",
            hostname=kv["hostname"],
        )
    except (KeyError, ValueError) as exc:
        raise DeployError(
            f"unexpected answer from {target.host}: {proc.stdout[-500:]!r}",
            "the login shell must be POSIX (sh, bash, dash)",
        ) from exc


def check_compatible(manifest: Manifest, found: Probe, target: Target) -> None:
    want = manifest.target
    if found.python == "none":
        raise DeployError(
            f"{target.host} has no python3", "install it: sudo apt install python3 python3-venv"
        )
    if (found.arch, found.python) != (want.arch, want.python):
        raise BundleError(
            f"the bundle is for {want.arch} with Python {want.python}, but {target.host} is {found.arch} with "
            f"Python {found.python}; refusing to install",
            f"rebuild it for this device: edge-flash bundle --arch {found.arch} --python {found.python} ...",
        )
    if target.systemd and not found.systemd:
        raise DeployError(
            f"{target.host} does not run systemd, the agent cannot be installed as a service",
            "pass --no-systemd (install only; start PREFIX/bin/edge-agent yourself)",
        )


def _sudo(target: Target, found: Probe) -> str:
    use = target.sudo == "yes" or (target.sudo == "auto" and found.uid != 0 and target.systemd)
    return "sudo -n " if use else ""


def _install_failed(target: Target, proc: subprocess.CompletedProcess[str], what: str) -> DeployError:
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    reason = INSTALL_EXIT.get(proc.returncode, f"exit {proc.returncode}")
    fix = "see the installer's messages above"
    if "sudo" in proc.stderr and "password" in proc.stderr:
        fix = "allow passwordless sudo for this user, log in as root, or pass --sudo no with a writable --prefix"
    elif proc.returncode == 5:
        fix = "nothing to undo: only one release is installed"
    return DeployError(f"{what} on {target.host} failed: {reason}\n{tail}", fix)


def deploy(
    target: Target,
    bundle: Path,
    *,
    force: bool = False,
    wait_online: str | None = None,
    wait_timeout: float = 120.0,
    topic_prefix: str = "edge",
) -> dict[str, str]:
    """Install ``bundle`` on the target; returns install.sh's summary (release, previous, prefix)."""
    _say(f"checking {bundle} ...")
    manifest = verify_bundle(bundle)
    digest = sha256_file(bundle)
    _say(f"probing {target.host} ...")
    found = probe(target)
    check_compatible(manifest, found, target)
    sudo = _sudo(target, found)
    mk = target.ssh("mktemp -d /var/tmp/edge-flash.XXXXXX", timeout=60)
    if mk.returncode != 0:
        raise _unreachable(target, mk)
    tmp = mk.stdout.strip()
    try:
        size_mb = bundle.stat().st_size / 1e6
        _say(f"copying {bundle.name} ({size_mb:.1f} MB) to {target.host}:{tmp} ...")
        t0 = time.monotonic()
        target.scp(bundle, f"{tmp}/bundle.tar.gz")
        _say(f"copied in {time.monotonic() - t0:.1f} s; installing release {manifest.bundle_id} ...")
        flags = (
            ["--prefix", target.prefix]
            + ([] if target.systemd else ["--no-systemd"])
            + (["--force"] if force else [])
        )
        q = shlex.quote
        script = (
            f"cd {q(tmp)} && "
            f"if ! echo {q(digest + '  bundle.tar.gz')} | sha256sum -c --quiet >&2; then exit 3; fi && "
            f"tar -xzf bundle.tar.gz && "
            f"{sudo}bash edge-bundle/install.sh {' '.join(q(f) for f in flags)}"
        )
        proc = target.ssh(script)
    finally:
        target.ssh(f"rm -rf {shlex.quote(tmp)}", timeout=60)
    if proc.returncode == 255 and not proc.stdout:
        raise _unreachable(target, proc)
    if proc.returncode != 0:
        raise _install_failed(target, proc, "installing")
    for line in proc.stderr.splitlines():
        if line.startswith("install.sh: "):
            _say(line[len("install.sh: ") :])
    summary = dict(kv.split("=", 1) for kv in proc.stdout.strip().splitlines()[-1].split() if "=" in kv)
    if wait_online:
        device = _device_id(manifest, bundle) or found.hostname
        shas = {e.sha256 for e in manifest.models}
        _say(f"waiting for {topic_prefix}/{device} to come online on {wait_online} ...")
        status = wait_for_online(wait_online, topic_prefix, device, shas, wait_timeout)
        _say(f"{device} is online, running {status.get('model', {}).get('path') or status.get('model_path')}")
    return summary


def _device_id(manifest: Manifest, bundle: Path) -> str | None:
    import tarfile

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with tarfile.open(bundle, "r:gz") as tar:
        f = tar.extractfile(f"edge-bundle/{manifest.config}")
        cfg = tomllib.loads(f.read().decode()) if f else {}
    return cfg.get("mqtt", {}).get("device_id")


def rollback(target: Target) -> dict[str, str]:
    found = probe(target)
    sudo = _sudo(target, found)
    flags = ["--rollback", "--prefix", target.prefix] + ([] if target.systemd else ["--no-systemd"])
    script = (
        f"if [ ! -e {shlex.quote(target.prefix)}/current/install.sh ]; then "
        f"echo 'install.sh: error: nothing installed under {target.prefix}' >&2; exit 5; fi; "
        f"{sudo}bash {shlex.quote(target.prefix)}/current/install.sh {' '.join(shlex.quote(f) for f in flags)}"
    )
    proc = target.ssh(script, timeout=300)
    if proc.returncode == 255 and not proc.stdout:
        raise _unreachable(target, proc)
    if proc.returncode != 0:
        raise _install_failed(target, proc, "rolling back")
    for line in proc.stderr.splitlines():
        if line.startswith("install.sh: "):
            _say(line[len("install.sh: ") :])
    return {"ok": "true"}


def wait_for_online(
    broker_url: str, topic_prefix: str, device: str, model_shas: set[str], timeout: float
) -> dict[str, Any]:
    """Block until ``<prefix>/<device>`` says ``online`` and its status runs one of ``model_shas``.

    Both are retained, so a device that came up before we subscribed counts; a
    stale retained status from the previous release does not (wrong sha256).
    """
    from urllib.parse import urlparse

    import paho.mqtt.client as mqtt

    url = urlparse(broker_url)
    if url.scheme not in ("mqtt", "mqtts", "tcp") or not url.hostname:
        raise DeployError(
            f"--wait-online wants mqtt://HOST[:PORT]; received {broker_url!r}",
            "e.g. --wait-online mqtt://192.0.2.10:1883",
        )
    state: dict[str, Any] = {"online": False, "status": None}
    base = f"{topic_prefix}/{device}"

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.topic == f"{base}/availability":
            state["online"] = msg.payload == b"online"
        elif msg.topic == f"{base}/status":
            try:
                state["status"] = json.loads(msg.payload)
            except ValueError:
                state["status"] = None

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-flash-wait-{time.time_ns()}")
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.scheme == "mqtts":
        client.tls_set()
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe([(f"{base}/availability", 1), (f"{base}/status", 1)])
    try:
        client.connect(url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883), keepalive=30)
    except OSError as exc:
        raise DeployError(
            f"cannot connect to the broker {broker_url}: {exc}", "check the URL and the broker"
        ) from exc
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = state["status"]
            sha = (st or {}).get("model_sha256") or ((st or {}).get("model") or {}).get("sha256")
            if state["online"] and sha in model_shas:
                return dict(st)
            time.sleep(0.1)
    finally:
        client.loop_stop()
        client.disconnect()
    seen = "offline or silent" if not state["online"] else "online but running another model"
    raise DeployError(
        f"{base} did not come online with the new model within {timeout:.0f} s ({seen})",
        "look at the device: journalctl -u edge-agent -n 50; or raise --wait-timeout",
    )
