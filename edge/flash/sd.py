"""First-boot provisioning on a Raspberry Pi OS image or SD card, written into its FAT boot partition.

Nothing is mounted: the partition table is read with ``sfdisk --json`` and
the FAT partition is written with mtools at its byte offset
(``mcopy -i image@@offset``), so the root partition is never opened and the
tool runs without loop devices or privileges (root only for a block device).

Two ways to run the installer at first boot, picked from what the image has:
* cloud-init (images that ship ``user-data`` in the boot partition): our
  ``user-data`` (the image's kept as ``user-data.orig``), ``network-config``
  for Wi-Fi, and ``runcmd`` calls ``edge-flash/provision.sh``.
* ``firstrun.sh`` (older images): appended to ``cmdline.txt`` as
  ``systemd.run=...`` exactly as Raspberry Pi Imager does; the script removes
  that hook first, sets hostname/user/key/Wi-Fi, installs, and reboots.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge.digest import sha256_file, sha256_hex
from edge.errors import EdgeError
from edge.flash.bundle import template
from edge.flash.manifest import verify_bundle

FAT_DOS_TYPES = {"b", "c", "e", "6", "ef"}
FAT_GPT_TYPES = {"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}
HOOK_ARGS = ("systemd.run_success_action=reboot", "systemd.unit=kernel-command-line.target")
DIR = "edge-flash"
COMPRESSED = {b"\xfd7zXZ": "xz", b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"(\xb5/\xfd": "zstd"}


class SdError(EdgeError):
    """The image or card cannot be provisioned as asked."""


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str


def _run(cmd: list[str], *, what: str, data: bytes | None = None) -> bytes:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0", LC_ALL="C")
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, env=env)
    except FileNotFoundError as exc:
        raise SdError(f"{cmd[0]} is not installed", "apt install mtools fdisk") from exc
    if proc.returncode != 0:
        raise SdError(
            f"{what} failed: {proc.stderr.decode(errors='replace').strip()[-600:]}",
            "check the image (is it a Raspberry Pi OS .img, not compressed?)",
        )
    return proc.stdout


def partitions(target: Path) -> list[Partition]:
    out = _run(["sfdisk", "--json", str(target)], what=f"reading the partition table of {target}")
    table = json.loads(out)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = []
    for i, p in enumerate(table.get("partitions", []), 1):
        m = re.search(r"(\d+)$", p.get("node", ""))
        parts.append(
            Partition(
                number=int(m.group(1)) if m else i,
                start=int(p["start"]) * sector,
                size=int(p["size"]) * sector,
                type=str(p["type"]).upper(),
            )
        )
    return parts


def boot_partition(parts: list[Partition], target: Path) -> Partition:
    for p in parts:
        if p.type.lower() in FAT_DOS_TYPES or p.type in FAT_GPT_TYPES:
            return p
    raise SdError(
        f"{target} has no FAT partition (found types {[p.type for p in parts]})",
        "pass a Raspberry Pi OS image or card: its first partition is the FAT boot partition",
    )


class Fat:
    """One FAT file system inside an image or device, through mtools at a byte offset."""

    def __init__(self, target: Path, offset: int) -> None:
        self.spec = f"{target}@@{offset}"

    def names(self, folder: str = "") -> set[str]:
        out = _run(["mdir", "-b", "-i", self.spec, f"::/{folder}"], what="listing the FAT partition")
        prefix = f"::/{folder}/" if folder else "::/"
        return {
            line[len(prefix) :].rstrip("/")
            for line in out.decode(errors="replace").splitlines()
            if line.startswith(prefix)
        }

    def free_bytes(self) -> int:
        out = _run(["mdir", "-i", self.spec, "::/"], what="reading free space").decode(errors="replace")
        m = re.search(r"([\d ]+) bytes free", out)
        return int(m.group(1).replace(" ", "")) if m else -1

    def read(self, path: str) -> bytes:
        return _run(["mcopy", "-n", "-i", self.spec, f"::/{path}", "-"], what=f"reading {path}")

    def mkdir(self, path: str) -> None:
        if path.split("/")[-1] not in self.names("/".join(path.split("/")[:-1])):
            _run(["mmd", "-i", self.spec, f"::/{path}"], what=f"creating {path}")

    def write(self, path: str, data: bytes | Path) -> None:
        if isinstance(data, Path):
            _run(["mcopy", "-o", "-n", "-i", self.spec, str(data), f"::/{path}"], what=f"writing {path}")
            return
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            _run(["mcopy", "-o", "-n", "-i", self.spec, tmp.name, f"::/{path}"], what=f"writing {path}")


# --- the kernel command line hook -------------------------------------------------------------


def boot_dir_for(issue_txt: bytes | None) -> str:
    """Where the running system mounts the FAT partition: /boot/firmware since bookworm (2023-10), /boot before."""
    if issue_txt:
        m = re.search(rb"(\d{4})-(\d{2})-(\d{2})", issue_txt)
        if m and (int(m.group(1)), int(m.group(2))) < (2023, 10):
            return "/boot"
    return "/boot/firmware"


def add_firstrun_hook(cmdline: str, boot_dir: str) -> str:
    """cmdline.txt with the firstrun hook appended once; one line, as the firmware reads only the first."""
    lines = [line for line in cmdline.splitlines() if line.strip()]
    if len(lines) != 1:
        raise SdError(
            f"cmdline.txt must hold exactly one line, it holds {len(lines)}",
            "fix cmdline.txt on the card (the firmware reads one line of kernel arguments)",
        )
    args = [a for a in lines[0].split() if not a.startswith("systemd.run=") and a not in HOOK_ARGS]
    return " ".join([*args, f"systemd.run={boot_dir}/firstrun.sh", *HOOK_ARGS]) + "\n"


# --- block devices ----------------------------------------------------------------------------


def _parent_disk(dev: str) -> str:
    """/dev/sdb1 -> /dev/sdb, /dev/mmcblk0p2 -> /dev/mmcblk0, /dev/nvme0n1p1 -> /dev/nvme0n1."""
    m = re.match(r"^(/dev/(?:mmcblk\d+|nvme\d+n\d+|loop\d+))(p\d+)?$", dev)
    if m:
        return m.group(1)
    m = re.match(r"^(/dev/[a-z]+)\d+$", dev)
    return m.group(1) if m else dev


def check_block_device(device: Path, mounts_text: str, swaps_text: str = "") -> None:
    """Refuse a disk any of whose partitions is mounted or used as swap (that includes the system disk)."""
    disk = os.path.realpath(device)
    if _parent_disk(disk) != disk:
        raise SdError(
            f"{device} is a partition, edge-flash sd wants the whole card", f"pass {_parent_disk(disk)}"
        )
    busy = []
    for line in mounts_text.splitlines() + swaps_text.splitlines()[1:]:
        fields = line.split()
        if not fields or not fields[0].startswith("/dev/"):
            continue
        src = os.path.realpath(fields[0]) if os.path.exists(fields[0]) else fields[0]
        if _parent_disk(src) == disk:
            where = (
                fields[1]
                if len(fields) > 1 and not fields[1].isdigit() and fields[1] != "partition"
                else "swap"
            )
            busy.append(f"{src} on {where}")
    if busy:
        system = any(
            b.endswith((" on /", " on /boot", " on /boot/firmware", " on /usr", " on swap")) for b in busy
        )
        raise SdError(
            f"{device} is in use ({', '.join(busy)})"
            + ("; it is this machine's system disk" if system else ""),
            "pick the SD card's device (lsblk shows it), and unmount it first: "
            "udisksctl unmount -b DEVICE or sudo umount DEVICE*"
            if not system
            else "this would destroy the running system: pick the SD card (lsblk)",
        )


def _block_check(target: Path, assume_yes: bool, mounts: Path, swaps: Path) -> None:
    check_block_device(
        target, mounts.read_text() if mounts.exists() else "", swaps.read_text() if swaps.exists() else ""
    )
    if not assume_yes:
        if not sys.stdin.isatty():
            raise SdError(
                f"{target} is a block device and there is no terminal to confirm",
                "pass --yes once you are sure it is the SD card (lsblk)",
            )
        answer = input(f"write first-boot files to the boot partition of {target}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise SdError("cancelled", "")


# --- what goes on the card -----------------------------------------------------------------------


def _shell_settings(**values: str) -> str:
    import shlex

    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML flow scalar


def user_data(hostname: str | None, user: str, ssh_key: str | None, boot_dir: str) -> str:
    lines = [
        "#cloud-config",
        "# Written by edge-flash (the image's own user-data is kept as user-data.orig).",
    ]
    if hostname:
        lines += [f"hostname: {_yaml_str(hostname)}", "manage_etc_hosts: true"]
    if ssh_key:
        lines += [
            "users:",
            f"  - name: {_yaml_str(user)}",
            "    groups: [sudo, plugdev, video]",
            "    shell: /bin/bash",
            '    sudo: "ALL=(ALL) NOPASSWD:ALL"',
            "    lock_passwd: true",
            f"    ssh_authorized_keys: [{_yaml_str(ssh_key)}]",
            "ssh_pwauth: false",
        ]
    lines += [
        "runcmd:",
        "  - [systemctl, enable, --now, ssh]",
        f"  - [bash, {_yaml_str(boot_dir + '/' + DIR + '/provision.sh')}]",
    ]
    return "\n".join(lines) + "\n"


def network_config(ssid: str, psk: str, country: str) -> str:
    return (
        "network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      optional: true\n"
        f"      regulatory-domain: {_yaml_str(country)}\n      access-points:\n"
        f"        {_yaml_str(ssid)}:\n          password: {_yaml_str(psk)}\n"
    )


@dataclass(frozen=True)
class Provisioned:
    mode: str
    boot_offset: int
    written: tuple[str, ...]
    cmdline: str | None


def provision(
    target: Path,
    bundle: Path,
    *,
    hostname: str | None = None,
    ssh_key: Path | None = None,
    user: str = "pi",
    wifi: str | None = None,
    wifi_country: str = "GB",
    mode: str = "auto",
    assume_yes: bool = False,
    mounts: Path = Path("/proc/mounts"),
    swaps: Path = Path("/proc/swaps"),
) -> Provisioned:
    say = lambda msg: print(f"edge-flash: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    manifest = verify_bundle(bundle)
    if not target.exists():
        raise SdError(f"{target} does not exist", "pass the .img file or the card's /dev/ path")
    is_block = stat.S_ISBLK(target.stat().st_mode)
    if is_block:
        _block_check(target, assume_yes, mounts, swaps)
    else:
        with open(target, "rb") as f:
            head = f.read(8)
        for magic, kind in COMPRESSED.items():
            if head.startswith(magic):
                raise SdError(f"{target} is {kind}-compressed", f"decompress it first (e.g. unxz {target})")
    if hostname is not None and not re.fullmatch(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", hostname):
        raise SdError(
            f"--hostname {hostname!r} is not a valid host name", "letters, digits and '-', up to 63"
        )
    key_text = None
    if ssh_key is not None:
        raw = ssh_key.read_bytes()[:20000]
        key_text = raw.decode("utf-8", errors="replace").strip()
        if not key_text.startswith(("ssh-", "ecdsa-", "sk-")) or "PRIVATE KEY" in key_text:
            raise SdError(
                f"--ssh-key {ssh_key} is not an OpenSSH public key",
                "pass the .pub file (e.g. ~/.ssh/id_ed25519.pub), never the private key",
            )
    ssid = psk = ""
    if wifi:
        ssid, sep, psk = wifi.partition(":")
        if not sep or not ssid or not 8 <= len(psk) <= 63:
            raise SdError(
                "--wifi wants SSID:PSK with an 8 to 63 character passphrase", "e.g. --wifi home:secret123"
            )

    part = boot_partition(partitions(target), target)
    fat = Fat(target, part.start)
    top = fat.names()
    if "cmdline.txt" not in top:
        raise SdError(f"the FAT partition of {target} has no cmdline.txt", "is this a Raspberry Pi OS image?")
    if mode == "auto":
        mode = "cloud-init" if "user-data" in top else "firstrun"
    boot_dir = boot_dir_for(fat.read("issue.txt") if "issue.txt" in top else None)
    size = bundle.stat().st_size
    free = fat.free_bytes()
    if 0 <= free < size + 1_000_000:
        raise SdError(
            f"the boot partition has {free / 1e6:.1f} MB free, the bundle needs {size / 1e6:.1f} MB",
            "remove files from it, or build a smaller bundle (one model, no Edge TPU twin)",
        )

    digest = sha256_file(bundle)
    files: dict[str, bytes | Path] = {
        f"{DIR}/bundle.tar.gz": bundle,
        f"{DIR}/bundle.tar.gz.sha256": f"{digest}  bundle.tar.gz\n".encode(),
        f"{DIR}/provision.sh": template("provision.sh"),
    }
    cmdline_new = None
    if mode == "cloud-init":
        if "user-data" in top and "user-data.orig" not in top:
            files["user-data.orig"] = fat.read("user-data")
        files["user-data"] = user_data(hostname, user, key_text, boot_dir).encode()
        if wifi:
            files["network-config"] = network_config(ssid, psk, wifi_country).encode()
    else:
        files[f"{DIR}/settings.env"] = _shell_settings(
            EDGE_HOSTNAME=hostname or "",
            EDGE_USER=user,
            EDGE_SSH_KEY=key_text or "",
            EDGE_WIFI_SSID=ssid,
            EDGE_WIFI_PSK=psk,
            EDGE_WIFI_COUNTRY=wifi_country,
        ).encode()
        files["firstrun.sh"] = template("firstrun.sh")
        cmdline_new = add_firstrun_hook(fat.read("cmdline.txt").decode(), boot_dir)
        files["cmdline.txt"] = cmdline_new.encode()

    fat.mkdir(DIR)
    say(
        f"{mode} provisioning of {target} (FAT partition {part.number} at byte {part.start}, "
        f"{part.size / 1e6:.0f} MB), bundle {manifest.bundle_id} for {manifest.target.arch}"
    )
    for i, (name, data) in enumerate(files.items(), 1):
        n = data.stat().st_size if isinstance(data, Path) else len(data)
        t0 = time.monotonic()
        fat.write(name, data)
        dt = time.monotonic() - t0
        rate = f", {n / 1e6 / dt:.1f} MB/s" if n > 1e6 and dt > 0 else ""
        say(f"[{i}/{len(files)}] wrote {name} ({n / 1e6:.2f} MB{rate})")
    if is_block:
        os.sync()
        subprocess.run(
            ["blockdev", "--flushbufs", str(target)], capture_output=True
        )  # read back from the card
    for name, data in files.items():
        want = sha256_file(data) if isinstance(data, Path) else sha256_hex(data)
        got = sha256_hex(fat.read(name))
        if got != want:
            raise SdError(
                f"read-back of {name} from {target} differs from what was written",
                "the card may be failing or fake: try another card",
            )
    say(f"verified {len(files)} files by reading them back; first boot installs the agent")
    return Provisioned(mode=mode, boot_offset=part.start, written=tuple(files), cmdline=cmdline_new)
