"""edge-flash: bundle the agent for a board, deploy it over SSH, or provision an SD card image.

edge-flash bundle --model m.tflite --labels labels.txt --arch aarch64 -o pi.tar.gz
edge-flash verify pi.tar.gz
edge-flash ssh pi@raspberrypi.local --bundle pi.tar.gz [--wait-online mqtt://broker:1883]
edge-flash rollback pi@raspberrypi.local
edge-flash sd raspios.img --bundle pi.tar.gz --hostname cam1 --ssh-key ~/.ssh/id_ed25519.pub
edge-flash keygen --out update.key
edge-flash push-model --broker mqtts://broker:8883 --device-id cam1 --key update.key m.tflite
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge import cli
from edge.errors import run_command


def _add_ssh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("host", help="[USER@]HOST, as ssh takes it (~/.ssh/config aliases work)")
    p.add_argument("--port", "-p", type=int, help="SSH port")
    p.add_argument("--identity", "-i", type=Path, help="private key file (ssh -i)")
    p.add_argument(
        "--ssh-option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra ssh -o option, repeatable (e.g. StrictHostKeyChecking=accept-new)",
    )
    p.add_argument(
        "--ssh-config", "-F", type=Path, help="ssh client config file (ssh -F; default: ~/.ssh/config)"
    )
    p.add_argument("--prefix", default="/opt/edge-agent", help="install directory on the device")
    p.add_argument(
        "--no-systemd",
        action="store_true",
        help="hosts without systemd: install only, no service (start PREFIX/bin/edge-agent yourself)",
    )
    p.add_argument(
        "--sudo",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run the installer with sudo -n (auto: when the login is not root, unless --no-systemd)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("edge-flash", __doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bundle", help="build an offline bundle for a device")
    b.add_argument(
        "--model",
        "-m",
        type=Path,
        action="append",
        required=True,
        help=".tflite to run (repeatable; the first one runs; an _edgetpu model brings its CPU twin)",
    )
    b.add_argument("--labels", "-l", type=Path, help="labels file")
    b.add_argument(
        "--config", "-c", type=Path, help="agent TOML to start from (model, runtime, state dir are set)"
    )
    b.add_argument("--arch", default="aarch64", help="aarch64 (64-bit Raspberry Pi OS) or x86_64")
    b.add_argument("--python", default="3.11", help="the device's python3: 3.11 (bookworm) or 3.13 (trixie)")
    b.add_argument(
        "--runtime",
        default="ai-edge-litert",
        choices=("ai-edge-litert", "tflite-runtime"),
        help="TFLite runtime (tflite-runtime brings numpy<2)",
    )
    b.add_argument("--glibc", default="2.36", help="the device's glibc (bookworm 2.36, trixie 2.41)")
    b.add_argument("--broker", help="MQTT broker URL written into the config")
    b.add_argument(
        "--device-id", help="MQTT device id written into the config (default: the device's hostname)"
    )
    b.add_argument("--source", help="agent source (default mqtt: answers images published to .../infer)")
    b.add_argument(
        "--extras",
        default="",
        help="optional device features, comma-separated: signing (update verification), camera (OpenCV "
        "sources); signing is added by itself when --config names update keys",
    )
    b.add_argument("--agent-wheel", type=Path, help="use this edge-ml-toolkit wheel instead of building one")
    b.add_argument("--find-links", type=Path, action="append", help="extra local wheel directory for pip")
    b.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write (.tar.gz)")

    v = sub.add_parser("verify", help="check a bundle's sha256 sums and print its manifest summary")
    v.add_argument("bundle", type=Path, help="the bundle (.tar.gz)")

    s = sub.add_parser("ssh", help="deploy a bundle to a device over SSH")
    _add_ssh_args(s)
    s.add_argument("--bundle", "-b", type=Path, required=True, help="the bundle (.tar.gz)")
    s.add_argument("--force", action="store_true", help="reinstall even if this bundle is already installed")
    s.add_argument(
        "--wait-online",
        metavar="BROKER_URL",
        help="after the restart, wait for the device's availability=online on this broker",
    )
    s.add_argument("--wait-timeout", type=float, default=120.0, help="seconds for --wait-online")
    s.add_argument("--topic-prefix", default="edge", help="MQTT topic prefix, for --wait-online")

    r = sub.add_parser("rollback", help="make the previous release current again")
    _add_ssh_args(r)

    d = sub.add_parser("sd", help="write first-boot provisioning into a Raspberry Pi OS image or SD card")
    d.add_argument("target", type=Path, help="a .img file, or the SD card's block device (e.g. /dev/sdb)")
    d.add_argument("--bundle", "-b", type=Path, required=True, help="the bundle (.tar.gz)")
    d.add_argument("--hostname", help="the Pi's hostname (and the agent's device id)")
    d.add_argument("--ssh-key", type=Path, help="public key to authorize for the user")
    d.add_argument("--user", default="pi", help="login user to create/authorize")
    d.add_argument("--wifi", metavar="SSID:PSK", help="Wi-Fi network to join")
    d.add_argument("--wifi-country", default="GB", help="Wi-Fi regulatory country (two letters)")
    d.add_argument(
        "--mode",
        choices=("auto", "cloud-init", "firstrun"),
        default="auto",
        help="auto: cloud-init when the image has user-data, else firstrun.sh + cmdline.txt",
    )
    d.add_argument("--yes", action="store_true", help="do not ask before writing to a block device")

    from edge.ota.cli import add_subcommands  # keygen, push-model: signed over-the-air model updates

    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("edge-flash", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "func", None) is not None:  # keygen, push-model (edge.ota.cli)
        return int(args.func(args))
    if args.cmd == "bundle":
        from edge.flash import bundle

        built = bundle.build(
            args.model,
            args.output,
            arch=args.arch,
            python=args.python,
            runtime=args.runtime,
            glibc=args.glibc,
            labels=args.labels,
            config=args.config,
            broker=args.broker,
            device_id=args.device_id,
            source=args.source,
            agent_wheel=args.agent_wheel,
            find_links=args.find_links,
            extras=tuple(e.strip() for e in args.extras.split(",") if e.strip()),
        )
        m = built.manifest
        print(
            f"{built.path}: {built.size_bytes / 1e6:.1f} MB, bundle {m.bundle_id}, {m.target.arch} "
            f"Python {m.target.python}, {m.target.runtime} {m.runtime_version}, numpy {m.numpy_version}, "
            f"{len(m.models)} model(s); sha256 {built.sha256}"
        )
        return 0
    if args.cmd == "verify":
        from edge.flash.manifest import verify_bundle

        m = verify_bundle(args.bundle)
        print(
            json.dumps(
                {
                    "ok": True,
                    "bundle_id": m.bundle_id,
                    "target": m.target.model_dump(),
                    "agent_version": m.agent_version,
                    "runtime_version": m.runtime_version,
                    "numpy_version": m.numpy_version,
                    "models": [e.file for e in m.models],
                    "files": len(m.files),
                },
                indent=2,
            )
        )
        return 0
    if args.cmd in ("ssh", "rollback"):
        from edge.flash import ssh

        target = ssh.Target.from_args(args)
        if args.cmd == "rollback":
            ssh.rollback(target)
            print(f"{args.host}: rolled back to the previous release under {args.prefix}")
            return 0
        summary = ssh.deploy(
            target,
            args.bundle,
            force=args.force,
            wait_online=args.wait_online,
            wait_timeout=args.wait_timeout,
            topic_prefix=args.topic_prefix,
        )
        print(
            f"{args.host}: release {summary.get('release')} is current at {summary.get('prefix')} "
            f"(previous: {summary.get('previous') or 'none'})"
        )
        return 0
    if args.cmd == "sd":
        from edge.flash import sd

        done = sd.provision(
            args.target,
            args.bundle,
            hostname=args.hostname,
            ssh_key=args.ssh_key,
            user=args.user,
            wifi=args.wifi,
            wifi_country=args.wifi_country,
            mode=args.mode,
            assume_yes=args.yes,
        )
        print(
            f"{args.target}: {done.mode} first-boot provisioning written and verified "
            f"({len(done.written)} files in the FAT partition)"
        )
        return 0
    raise AssertionError(args.cmd)
