"""edge-flash sd on disk images built here (sfdisk, mkfs.vfat, mkfs.ext4): nothing mounted, nothing else touched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edge.flash import sd
from edge.flash.sd import SdError, check_block_device
from tests.flash.helpers import sh
from tests.support.process import run_module

SECTOR = 512
FAT_START, FAT_SECTORS = 8192, 196608  # 96 MiB FAT32 boot partition
EXT_START, EXT_SECTORS = FAT_START + FAT_SECTORS, 65536  # 32 MiB ext4 root
CMDLINE = (
    "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes "
    "rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot"
)
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def make_image(
    path: Path, *, cloud_init: bool = False, issue: str = "Raspberry Pi reference 2024-11-19\n"
) -> Path:
    sh("truncate", "-s", f"{(EXT_START + EXT_SECTORS + 2048) * SECTOR}", path)
    table = (
        f"label: dos\nstart={FAT_START}, size={FAT_SECTORS}, type=c\n"
        f"start={EXT_START}, size={EXT_SECTORS}, type=83\n"
    )
    sh("sfdisk", "-q", path, input=table)
    sh("mkfs.vfat", "-F", "32", "-n", "bootfs", "--offset", str(FAT_START), path, str(FAT_SECTORS // 2))
    sh(
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        "rootfs",
        "-E",
        f"offset={EXT_START * SECTOR}",
        path,
        f"{EXT_SECTORS * SECTOR // 1024}k",
    )
    src = path.parent / "bootfiles"
    src.mkdir(exist_ok=True)
    (src / "cmdline.txt").write_text(CMDLINE + "\n")
    (src / "issue.txt").write_text(issue)
    (src / "config.txt").write_text("[all]\ndtparam=audio=on\n")
    names = ["cmdline.txt", "issue.txt", "config.txt"]
    if cloud_init:
        (src / "user-data").write_text("#cloud-config\n# the image's stub\n")
        (src / "meta-data").write_text("instance-id: rpios-image\n")
        names += ["user-data", "meta-data"]
    sh("mcopy", "-i", f"{path}@@{FAT_START * SECTOR}", *[src / n for n in names], "::/", env=ENV)
    return path


def outside_fat(img: Path) -> str:
    """sha256 of every byte outside the FAT partition: MBR, gaps, the ext4 root."""
    data = img.read_bytes()
    h = hashlib.sha256(data[: FAT_START * SECTOR])
    h.update(data[(FAT_START + FAT_SECTORS) * SECTOR :])
    return h.hexdigest()


def ext4_bytes(img: Path) -> str:
    with open(img, "rb") as f:
        f.seek(EXT_START * SECTOR)
        return hashlib.sha256(f.read(EXT_SECTORS * SECTOR)).hexdigest()


def fat_read(img: Path, name: str) -> bytes:
    return sh(
        "mcopy", "-n", "-i", f"{img}@@{FAT_START * SECTOR}", f"::/{name}", "-", env=ENV, text=False
    ).stdout  # type: ignore[return-value]


def fat_names(img: Path, folder: str = "") -> set[str]:
    out = sh("mdir", "-b", "-i", f"{img}@@{FAT_START * SECTOR}", f"::/{folder}", env=ENV).stdout
    return {line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()}


@pytest.fixture
def pubkey(tmp_path: Path) -> Path:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "id")
    return tmp_path / "id.pub"


def test_firstrun_provisioning_writes_only_the_fat_partition(
    make_bundle, tmp_path: Path, pubkey: Path
) -> None:
    bundle = make_bundle("aarch64")
    img = make_image(tmp_path / "raspios.img")
    outside, ext4 = outside_fat(img), ext4_bytes(img)
    args = [
        "sd",
        str(img),
        "--bundle",
        str(bundle.path),
        "--hostname",
        "cam1",
        "--ssh-key",
        str(pubkey),
        "--wifi",
        "home net:pass phrase 1",
    ]
    proc = run_module("edge.flash", *args)
    assert proc.returncode == 0, proc.stderr
    assert "firstrun provisioning" in proc.stderr and "verified 6 files" in proc.stderr
    assert {"edge-flash", "firstrun.sh", "cmdline.txt", "config.txt"} <= fat_names(img)
    assert fat_names(img, "edge-flash") == {
        "bundle.tar.gz",
        "bundle.tar.gz.sha256",
        "provision.sh",
        "settings.env",
    }
    assert hashlib.sha256(fat_read(img, "edge-flash/bundle.tar.gz")).hexdigest() == bundle.sha256
    assert fat_read(img, "edge-flash/bundle.tar.gz.sha256").decode() == f"{bundle.sha256}  bundle.tar.gz\n"
    assert outside_fat(img) == outside and ext4_bytes(img) == ext4  # root partition byte-for-byte untouched

    hook = "systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
    cmdline = fat_read(img, "cmdline.txt").decode()
    assert cmdline == f"{CMDLINE} {hook}\n"
    # twice: still one hook, one line
    again = run_module("edge.flash", *args)
    assert again.returncode == 0, again.stderr
    assert fat_read(img, "cmdline.txt").decode() == cmdline and outside_fat(img) == outside

    # settings are shell-quoted: spaces in SSID and passphrase survive
    settings = tmp_path / "settings.env"
    settings.write_bytes(fat_read(img, "edge-flash/settings.env"))
    shown = sh(
        "bash",
        "-c",
        f'. {settings}; printf "%s|%s|%s|%s" "$EDGE_HOSTNAME" "$EDGE_WIFI_SSID" '
        '"$EDGE_WIFI_PSK" "$EDGE_SSH_KEY"',
    ).stdout
    assert shown == f"cam1|home net|pass phrase 1|{pubkey.read_text().strip()}"

    # the first-boot script removes exactly its hook, leaving the original line
    root = tmp_path / "pi"
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "cmdline.txt").write_text(cmdline)
    firstrun = tmp_path / "firstrun.sh"
    firstrun.write_bytes(fat_read(img, "firstrun.sh"))
    sh("bash", firstrun, "--remove-hook-only", env={**os.environ, "EDGE_FIRSTRUN_ROOT": str(root)})
    assert (root / "boot" / "firmware" / "cmdline.txt").read_text() == CMDLINE + "\n"
    body = firstrun.read_text()
    assert body.index("\nremove_hook\n") < body.index(
        '/provision.sh" --no-start'
    )  # hook goes before any work


def test_pre_bookworm_image_gets_the_boot_path_hook(make_bundle, tmp_path: Path) -> None:
    img = make_image(tmp_path / "old.img", issue="Raspberry Pi reference 2023-05-03\n")
    proc = run_module("edge.flash", "sd", str(img), "--bundle", str(make_bundle("aarch64").path))
    assert proc.returncode == 0, proc.stderr
    assert "systemd.run=/boot/firstrun.sh " in fat_read(img, "cmdline.txt").decode()


def test_cloud_init_image_gets_user_data_and_keeps_cmdline(make_bundle, tmp_path: Path, pubkey: Path) -> None:
    img = make_image(tmp_path / "trixie.img", cloud_init=True)
    outside = outside_fat(img)
    proc = run_module(
        "edge.flash",
        "sd",
        str(img),
        "--bundle",
        str(make_bundle("aarch64").path),
        "--hostname",
        "cam2",
        "--ssh-key",
        str(pubkey),
        "--user",
        "edge",
        "--wifi",
        "lab:12345678",
        "--wifi-country",
        "FR",
    )
    assert proc.returncode == 0, proc.stderr
    assert "cloud-init provisioning" in proc.stderr
    assert fat_read(img, "cmdline.txt").decode() == CMDLINE + "\n" and "firstrun.sh" not in fat_names(img)
    assert fat_read(img, "user-data.orig").decode() == "#cloud-config\n# the image's stub\n"
    ud = fat_read(img, "user-data").decode()
    assert ud.startswith("#cloud-config\n") and 'hostname: "cam2"' in ud and '- name: "edge"' in ud
    assert pubkey.read_text().strip() in ud and "ssh_pwauth: false" in ud
    assert '[bash, "/boot/firmware/edge-flash/provision.sh"]' in ud
    net = fat_read(img, "network-config").decode()
    assert '"lab":' in net and 'password: "12345678"' in net and 'regulatory-domain: "FR"' in net
    assert outside_fat(img) == outside


def test_refusals(make_bundle, tmp_path: Path) -> None:
    bundle = str(make_bundle("aarch64").path)
    xz = tmp_path / "raspios.img.xz"
    xz.write_bytes(b"\xfd7zXZ\x00" + b"\x00" * 100)
    proc = run_module("edge.flash", "sd", str(xz), "--bundle", bundle)
    assert proc.returncode == 2 and "xz-compressed" in proc.stderr and "unxz" in proc.stderr
    img = make_image(tmp_path / "a.img")
    before = img.read_bytes()
    for extra, message in (
        (["--hostname", "bad_name!"], "not a valid host name"),
        (["--wifi", "nopass"], "SSID:PSK"),
        (["--ssh-key", str(tmp_path / "a.img")], "not an OpenSSH public key"),
    ):
        proc = run_module("edge.flash", "sd", str(img), "--bundle", bundle, *extra)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert img.read_bytes() == before
    bare = tmp_path / "bare.img"
    sh("truncate", "-s", "40M", bare)
    sh("sfdisk", "-q", bare, input="label: dos\nstart=2048, type=83\n")
    proc = run_module("edge.flash", "sd", str(bare), "--bundle", bundle)
    assert proc.returncode == 2 and "has no FAT partition" in proc.stderr


MOUNTS = """sysfs /sys sysfs rw 0 0
/dev/mmcblk0p2 / ext4 rw,noatime 0 0
/dev/mmcblk0p1 /boot/firmware vfat rw 0 0
/dev/sdb1 /media/pi/bootfs vfat rw,nosuid 0 0
"""


def test_block_device_refusals_on_a_mounts_table() -> None:
    with pytest.raises(SdError, match="system disk") as err:
        check_block_device(Path("/dev/mmcblk0"), MOUNTS)
    assert "/dev/mmcblk0p2 on /" in err.value.what
    with pytest.raises(SdError, match="in use") as err:
        check_block_device(Path("/dev/sdb"), MOUNTS)
    assert "umount" in err.value.fix and "system disk" not in err.value.what
    with pytest.raises(SdError, match="is a partition"):
        check_block_device(Path("/dev/sdc1"), MOUNTS)
    with pytest.raises(SdError, match="swap"):
        check_block_device(
            Path("/dev/sdc"), "", "Filename Type Size Used Priority\n/dev/sdc2 partition 1 0 -2\n"
        )
    check_block_device(Path("/dev/sdc"), MOUNTS)  # an unmounted card passes
    check_block_device(Path("/dev/nvme0n1"), MOUNTS)


def test_cmdline_hook_is_idempotent_and_single_line() -> None:
    once = sd.add_firstrun_hook(CMDLINE + "\n", "/boot/firmware")
    assert sd.add_firstrun_hook(once, "/boot/firmware") == once and once.count("\n") == 1
    with pytest.raises(SdError, match="exactly one line"):
        sd.add_firstrun_hook("a=1\nb=2\n", "/boot")


def test_provision_script_from_the_card_installs_the_bundle(make_bundle, tmp_path: Path) -> None:
    """What cloud-init's runcmd / firstrun.sh run, here against a prefix on this x86_64 machine."""
    from tests.flash.helpers import clean_env

    bundle = make_bundle("x86_64")
    img = make_image(tmp_path / "pc.img", cloud_init=True)
    assert run_module("edge.flash", "sd", str(img), "--bundle", str(bundle.path)).returncode == 0
    card = tmp_path / "card"
    card.mkdir()
    sh("mcopy", "-s", "-n", "-i", f"{img}@@{FAT_START * SECTOR}", "::/edge-flash", card, env=ENV)
    prefix = tmp_path / "opt"
    proc = sh(
        "bash",
        card / "edge-flash" / "provision.sh",
        "--prefix",
        prefix,
        "--no-systemd",
        check=False,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(prefix / "current") == f"releases/{bundle.manifest.bundle_id}"
    assert (card / "edge-flash" / "installed").is_file()
    # a card that rotted after writing: refused before anything is unpacked
    data = bytearray((card / "edge-flash" / "bundle.tar.gz").read_bytes())
    data[-100] ^= 1
    (card / "edge-flash" / "bundle.tar.gz").write_bytes(bytes(data))
    proc = sh(
        "bash",
        card / "edge-flash" / "provision.sh",
        "--prefix",
        tmp_path / "other",
        "--no-systemd",
        check=False,
        env=clean_env(),
    )
    assert proc.returncode == 3 and "corrupt" in proc.stderr and not (tmp_path / "other").exists()
