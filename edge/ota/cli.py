"""``keygen`` and ``push-model`` subcommands, shared by ``edge-flash`` and ``python -m edge.ota``."""

from __future__ import annotations

import argparse
import json
import sys

from edge import cli
from edge.errors import run_command
from edge.ota.manifest import DEFAULT_MAX_BYTES, STAGES


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge.ota.keys import generate_keypair

    private, public, kid = generate_keypair(args.out, args.public, overwrite=args.force)
    print(f"private key: {private} (mode 600: keep it off the devices)")
    print(f"public key:  {public} (key id {kid}): put it in each agent's config as ota.public_keys")
    return 0


def cmd_push_model(args: argparse.Namespace) -> int:
    from edge.ota.push import push_model, read_secret

    password = read_secret(args.password, args.password_file)
    answer = push_model(
        args.broker,
        args.device_id,
        args.key,
        args.model,
        labels_path=args.labels,
        version=args.version,
        prefix=args.prefix,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.cert_key_file,
        timeout=args.timeout,
        max_bytes=args.max_bytes,
        bind_device=not args.any_device,
        stage=args.stage,
        shadow_fraction=args.shadow_fraction,
        shadow_window_s=args.shadow_window,
    )
    print(json.dumps(answer, indent=2))
    if not answer.get("ok"):
        print(
            f"{answer.get('stage') or 'update'} refused ({answer.get('reason')}): {answer.get('error')}"
            + (f"\n  fix: {answer['fix']}" if answer.get("fix") else ""),
            file=sys.stderr,
        )
        return 1  # the device refused: the JSON answer on stdout, what to do on stderr
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register ``keygen`` and ``push-model`` on an argparse subparsers object (edge-flash's)."""
    k = sub.add_parser("keygen", help="create an Ed25519 key pair for signing model updates")
    k.add_argument("--out", default="edge-update.key", help="private key file (written 0600)")
    k.add_argument("--public", default=None, help="public key file (default: --out with a .pub suffix)")
    k.add_argument("--force", action="store_true", help="overwrite an existing private key")
    k.set_defaults(func=cmd_keygen)

    p = sub.add_parser("push-model", help="send a signed model update to a device and wait for its answer")
    p.add_argument("model", help=".tflite file to install")
    p.add_argument("--broker", required=True, help="mqtt://host:1883 or mqtts://host:8883")
    p.add_argument("--device-id", required=True)
    p.add_argument("--key", required=True, help="private key from edge-flash keygen")
    p.add_argument("--labels", help="labels file to install with the model")
    p.add_argument("--version", help="model version (default: the file name)")
    p.add_argument("--prefix", default="edge", help="topic prefix")
    p.add_argument("--username")
    p.add_argument("--password", help="prefer --password-file or $EDGE_MQTT_PASSWORD (not visible in ps)")
    p.add_argument("--password-file")
    p.add_argument("--ca-file", help="CA certificate to verify the broker (mqtts)")
    p.add_argument("--cert-file", help="client certificate (brokers requiring one)")
    p.add_argument("--cert-key-file", help="client certificate's private key")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the device's answer")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="refuse a larger model here (keep it within the device's ota.max_bytes)",
    )
    p.add_argument(
        "--any-device",
        action="store_true",
        help="do not bind the signature to --device-id (the same message installs on any device)",
    )
    p.add_argument(
        "--stage",
        choices=STAGES,
        default="install",
        help="install (default); shadow: run beside the active model and report on edge/<device>/shadow; "
        "activate / drop: promote or discard that shadowing model (only its sha256 is sent); activate "
        "naming the model the device ran before rolls back",
    )
    p.add_argument("--shadow-fraction", type=float, default=1.0, help="--stage shadow: share of inputs (0-1]")
    p.add_argument("--shadow-window", type=float, default=10.0, help="--stage shadow: seconds per window")
    p.set_defaults(func=cmd_push_model)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m edge.ota", "signed over-the-air model updates")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command("python -m edge.ota", lambda: int(args.func(args)))
