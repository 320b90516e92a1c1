"""``edge-fleet``: operate a fleet of edge agents from any machine that reaches the broker.

edge-fleet ls --broker mqtt://broker.lan          every device: online, model, runtime, board, last seen
edge-fleet ls --broker URL --json                 the same as one JSON document
edge-fleet rollout MODEL --broker URL --key KEY --devices 'cam-*'
                                                   shadow on canaries, check the gates, promote batch by
                                                   batch; any gate failing rolls back (exit 3)
edge-fleet status ROLLOUT_ID                       where a staged rollout stands (its state file)

rollout exit codes: 0 promoted everywhere, 3 rolled back, 4 incomplete (devices offline: run the same
command again to resume), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from edge import cli
from edge.errors import EdgeError, run_command
from edge.fleet.inventory import collect, rows
from edge.transport.url import parse_broker_url


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("edge-fleet", __doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = sub.add_parser("ls", help="list the devices the broker knows (retained availability and status)")
    ls.add_argument("--broker", required=True, help="mqtt://[user:pass@]host[:port] (mqtts:// for TLS)")
    ls.add_argument("--prefix", default="edge", help="topic prefix the agents publish under")
    ls.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    ls.add_argument(
        "--settle",
        type=float,
        default=0.5,
        metavar="S",
        help="stop once no retained message came for S seconds; above the agents' metrics interval "
        "(default 10 s) it also catches every device's spool depth",
    )
    ls.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="S",
        help="stop after S seconds at most, even if retained messages are still coming",
    )
    rollout_parser(sub)
    st = sub.add_parser("status", help="where a rollout stands, from its state file")
    st.add_argument("rollout_id", metavar="ROLLOUT_ID")
    st.add_argument(
        "--state-dir", type=Path, help="rollout state files (default: $XDG_STATE_HOME/edge-fleet/rollouts)"
    )
    st.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def rollout_parser(sub: Any) -> None:
    ro = sub.add_parser(
        "rollout",
        help="staged rollout gated by on-device shadow checks (exit 0 promoted, 3 rolled back, 4 incomplete)",
    )
    ro.add_argument("model", metavar="MODEL", help="the .tflite file to roll out")
    ro.add_argument("--broker", required=True, help="mqtt://[user:pass@]host[:port] (mqtts:// for TLS)")
    ro.add_argument("--key", required=True, help="Ed25519 private key the devices trust (edge-flash keygen)")
    ro.add_argument(
        "--devices", required=True, metavar="GLOB|ID,...", help="device ids and/or globs, comma-separated"
    )
    ro.add_argument("--labels", help="labels file shipped with the model")
    ro.add_argument("--version", help="version named in the signed manifest (default: the file's stem)")
    ro.add_argument("--canary", type=int, default=1, metavar="N", help="devices in the first batch")
    ro.add_argument("--batch", type=int, default=10, metavar="N", help="devices per later batch")
    ro.add_argument(
        "--window", type=float, default=300.0, metavar="S", help="seconds of live traffic per check"
    )
    ro.add_argument(
        "--min-agreement",
        type=float,
        default=0.9,
        metavar="A",
        help="lowest agreement a batch may show, 0..1",
    )
    ro.add_argument(
        "--max-error-rate", type=float, default=0.01, metavar="R", help="highest candidate error rate, 0..1"
    )
    ro.add_argument("--max-p99-ms", type=float, metavar="X", help="worst candidate p99 allowed (off)")
    ro.add_argument(
        "--min-inputs", type=int, default=20, metavar="N", help="inputs a batch's window needs to count"
    )
    ro.add_argument(
        "--no-shadow-batches",
        action="store_true",
        help="shadow-check only the canaries; later batches install directly",
    )
    ro.add_argument(
        "--ack-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="a device that does not answer in S seconds is retried later",
    )
    ro.add_argument(
        "--force",
        action="store_true",
        help="roll out even to devices shadowing another rollout's candidate (it is replaced)",
    )
    ro.add_argument("--prefix", default="edge", help="topic prefix the agents use")
    ro.add_argument("--settle", type=float, default=0.5, metavar="S", help="inventory: as edge-fleet ls")
    ro.add_argument(
        "--state-dir", type=Path, help="rollout state files (default: $XDG_STATE_HOME/edge-fleet/rollouts)"
    )
    ro.add_argument("--json", action="store_true", help="one JSON document at the end (progress on stderr)")


COLUMNS = (
    ("DEVICE", "device"),
    ("ONLINE", "online"),
    ("MODEL", "model"),
    ("VERSION", "model_version"),
    ("SHA256", "model_sha256"),
    ("RUNTIME", "runtime"),
    ("DELEGATE", "delegate"),
    ("ARCH", "arch"),
    ("BOARD", "board"),
    ("LAST SEEN", "last_seen_ago_s"),
    ("SPOOL", "spool_depth"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "online":
        return "yes" if value else "NO"
    if key == "model_sha256":
        return str(value)[:12]
    if key == "last_seen_ago_s":
        return f"{value:.0f}s ago" if value < 120 else f"{value / 60:.0f}m ago"
    return str(value)


def print_table(found: list[dict[str, Any]], out: TextIO) -> None:
    cells = [[h for h, _ in COLUMNS]] + [[_cell(k, r[k]) for _, k in COLUMNS] for r in found]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


def cmd_ls(args: argparse.Namespace) -> int:
    for opt in ("settle", "wait"):
        if getattr(args, opt) <= 0:
            raise EdgeError(f"--{opt} must be > 0, got {getattr(args, opt)}", f"e.g. --{opt} 1")
    broker = parse_broker_url(args.broker)
    got = collect(broker, prefix=args.prefix, settle_s=args.settle, wait_s=args.wait)
    found = rows(got)
    online = sum(r["online"] for r in found)
    if args.json:
        doc = {
            "broker": broker.redacted(),
            "devices": found,
            "online": online,
            "retained_messages": got.retained,
            "malformed": got.fleet.malformed,
            "seconds": round(got.seconds, 3),
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not found:
        print(f"no devices on {broker.redacted()} (no retained availability/status under {args.prefix}/)")
        return 0
    print_table(found, sys.stdout)
    note = f"{len(found)} devices, {online} online"
    if got.fleet.malformed:
        note += f"; {got.fleet.malformed} messages broke the contract (edge-watch --json shows them)"
    print(note)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edge.fleet import rollout

    r = rollout.load(args.rollout_id, args.state_dir or rollout.default_state_dir())
    summary = r.summary()
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"rollout {r.rollout_id}: model {r.model_sha256[:12]}" + (f" ({r.version})" if r.version else ""))
    print(f"phase {r.phase}, batch {r.batch_number} of {len(r.batches)}")
    print("devices: " + ", ".join(f"{n} {state}" for state, n in sorted(summary["devices"].items())))
    if r.reason:
        print(f"reason: {r.reason}")
    last = summary["last_verdict"]
    if last is not None:
        verdict = {True: "passed", False: "FAILED", None: "not enough inputs"}[last["passed"]]
        print(f"last check (batch {last['batch'] + 1}): {verdict} {json.dumps(last['figures'])}")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from edge.fleet.driver import main_rollout

    return main_rollout(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(
        "edge-fleet",
        lambda: {"ls": cmd_ls, "status": cmd_status, "rollout": cmd_rollout}[args.command](args),
    )


if __name__ == "__main__":
    sys.exit(main())
