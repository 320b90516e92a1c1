"""``edge-watch``: the fleet at a glance, from any machine that reaches the broker.

edge-watch --broker mqtt://broker.lan              live table, updated in place
edge-watch --broker URL --json --count 20          20 validated messages, one JSON per line
edge-watch --broker URL --json --kind predictions --count 1   the next prediction (not the retained status)
edge-watch --broker URL --csv preds.csv            log every prediction
edge-watch --broker URL --web 127.0.0.1:8080       live dashboard in a browser
edge-watch --broker URL --prometheus 0.0.0.0:9108  Prometheus exporter (series per device, drift)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from edge import cli
from edge.contract import schemas
from edge.errors import EdgeError, run_command
from edge.transport.url import BrokerURL, parse_broker_url
from edge.watch.state import Fleet, Malformed, Message, Thumbnail, top_result
from edge.watch.table import LiveTable

CSV_COLUMNS = (
    "received",
    "ts",
    "device",
    "seq",
    "source",
    "kind",
    "label",
    "index",
    "score",
    "latency_total_ms",
    "latency_inference_ms",
    "historical",
    "model_sha256",
)


def subscriptions(prefix: str, device: str | None, thumbnails: bool = False) -> list[tuple[str, int]]:
    """One filter per published topic: ``<prefix>/+/#`` would also pull every input image.
    ``thumbnails``: the frames agents publish with --publish-thumbnail too (the dashboard draws on them)."""
    dev = device or "+"
    subs = [(schemas.topic_for(kind, dev, prefix), 1) for kind in schemas.KINDS]
    if thumbnails:
        subs.append((schemas.topic_for("thumbnail", dev, prefix), 0))
    return subs


def csv_row(msg: Message) -> dict[str, Any]:
    p = msg.payload
    items = p.get("top_k") or p.get("detections") or []
    label, score = top_result(p)
    return {
        "received": f"{msg.received:.3f}",
        "ts": p["ts"],
        "device": msg.device,
        "seq": p["seq"],
        "source": p["source"],
        "kind": p["kind"],
        "label": "" if label is None else label,
        "index": items[0]["index"] if items else "",
        "score": "" if score is None else score,
        "latency_total_ms": p["latency_ms"]["total"],
        "latency_inference_ms": p["latency_ms"]["inference"],
        "historical": bool(p.get("historical", False)),
        "model_sha256": p["model_sha256"],
    }


class Watcher:
    """Connects, feeds the fleet model and the line outputs; counts toward ``--count``."""

    def __init__(
        self,
        broker: BrokerURL,
        fleet: Fleet,
        *,
        json_out: TextIO | None = None,
        csv_path: Path | None = None,
        count: int | None = None,
        kinds: set[str] | None = None,
        thumbnails: bool = False,
        err: TextIO = sys.stderr,
    ) -> None:
        self.broker = broker
        self.fleet = fleet
        self.json_out = json_out
        self.count = count
        self.kinds = kinds  # --kind: what --json prints and --count counts (the table shows everything)
        self.thumbnails = thumbnails  # --web: subscribe to thumbnails (for the dashboard only)
        self.err = err
        self.seen = 0
        self.pipe_closed = False
        self.done = threading.Event()
        self.connected = threading.Event()
        self.ever_connected = False
        self.connect_error: str | None = None
        self._out_lock = threading.Lock()
        self._csv_file = None
        self._csv = None
        if csv_path is not None:
            new = not csv_path.exists() or csv_path.stat().st_size == 0
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = open(csv_path, "a", newline="", encoding="utf-8")
            self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS)
            if new:
                self._csv.writeheader()
                self._csv_file.flush()
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-watch-{uuid.uuid4().hex[:8]}"
        )
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(1, 10)

    def start(self) -> None:
        try:
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ValueError) as err:
            raise EdgeError(
                f"cannot reach the broker at {self.broker.host}:{self.broker.port}: {err}",
                "check --broker and that the broker is running",
            ) from err
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._csv_file:
            self._csv_file.close()

    def _on_disconnect(self, *args: Any) -> None:
        self.connected.clear()  # paho reconnects by itself; the table says so meanwhile

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if reason.is_failure:
            self.connect_error = f"the broker refused the connection: {reason}"
            return
        client.subscribe(subscriptions(self.fleet.prefix, self.fleet.only_device, self.thumbnails))
        self.ever_connected = True
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if self.done.is_set():
            return
        result = self.fleet.ingest(msg.topic, msg.payload, retained=bool(msg.retain))
        if result is None or isinstance(result, Thumbnail):
            return  # a thumbnail is for the dashboard: not a line of --json, nor counted
        with self._out_lock:
            if isinstance(result, Malformed):
                if self.json_out is not None:
                    print(
                        f"edge-watch: malformed message on {result.topic}: {result.reason}",
                        file=self.err,
                        flush=True,
                    )
                return
            assert isinstance(result, Message)
            if self.kinds is not None and result.kind not in self.kinds:
                return
            if self.json_out is not None:
                try:
                    self.json_out.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
                    self.json_out.flush()
                except (BrokenPipeError, ValueError):
                    # the reader went away (`edge-watch --json | head -1`): that is the end, not an error
                    self.pipe_closed = True
                    self.done.set()
                    return
            if self._csv is not None and result.kind == "predictions":
                self._csv.writerow(csv_row(result))
                self._csv_file.flush()  # type: ignore[union-attr]
            self.seen += 1
            if self.count is not None and self.seen >= self.count:
                self.done.set()


def _connection_note(watcher: Watcher, broker: BrokerURL) -> str:
    if watcher.connected.is_set():
        return ""
    if watcher.ever_connected:
        return f"connection to {broker.redacted()} lost (reconnecting)"
    return f"not connected to {broker.redacted()} yet (retrying)"


def parse_hostport(text: str, option: str = "--web") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise EdgeError(f"{option} expects HOST:PORT, got {text!r}", f"e.g. {option} 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("edge-watch", __doc__)
    p.add_argument("--broker", required=True, help="mqtt://[user:pass@]host[:port] (mqtts:// for TLS)")
    p.add_argument("--prefix", default="edge", help="topic prefix the agents publish under")
    p.add_argument("--device", help="watch only this device id")
    p.add_argument(
        "--json",
        action="store_true",
        help="print each validated message as one JSON object per line (no table)",
    )
    p.add_argument("--csv", type=Path, metavar="FILE", help="append every prediction to FILE as CSV")
    p.add_argument("--count", type=int, metavar="N", help="exit after N validated messages")
    p.add_argument(
        "--kind",
        action="append",
        choices=schemas.KINDS,
        help="only these messages for --json and --count (repeatable), e.g. --kind predictions: "
        "the retained availability and status otherwise come first",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="exit after S seconds (status 1 if --count was given and not reached)",
    )
    p.add_argument("--web", metavar="HOST:PORT", help="serve a live dashboard, e.g. 127.0.0.1:8080")
    p.add_argument(
        "--prometheus",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (needs prometheus-client)",
    )
    p.add_argument(
        "--drift-min",
        type=int,
        default=50,
        metavar="N",
        help="drift (PSI) compares metrics windows with at least N predictions (default 50)",
    )
    p.add_argument(
        "--validator",
        choices=["auto", "builtin", "jsonschema"],
        default="auto",
        help="schema checks: jsonschema when installed (auto), or the built-in validator "
        "(about 3x faster, no dependency; the same verdicts)",
    )
    p.add_argument(
        "--sse-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="close each dashboard event stream after S s; browsers reconnect by themselves "
        "(lower it behind proxies that cut idle streams)",
    )
    p.add_argument("--interval", type=float, default=0.5, help="table refresh period in seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("edge-watch", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise EdgeError(f"--count must be at least 1, got {args.count}", "drop --count to watch forever")
    broker = parse_broker_url(args.broker)
    if args.drift_min < 1:
        raise EdgeError(f"--drift-min must be at least 1, got {args.drift_min}", "e.g. --drift-min 50")
    fleet = Fleet(
        prefix=args.prefix,
        device=args.device,
        validator=args.validator,
        drift_min=args.drift_min,
        thumbnails=bool(args.web),
    )
    watcher = Watcher(
        broker,
        fleet,
        json_out=sys.stdout if args.json else None,
        csv_path=args.csv,
        count=args.count,
        kinds=set(args.kind) if args.kind else None,
        thumbnails=bool(args.web),
    )
    dashboard = None
    if args.web:
        from edge.watch.web import Dashboard

        host, port = parse_hostport(args.web)
        dashboard = Dashboard(
            fleet, host, port, broker=broker.redacted(), stream_seconds=args.sse_seconds
        ).start()
        print(f"edge-watch: dashboard on {dashboard.url}", file=sys.stderr, flush=True)
    exporter = None
    if args.prometheus:
        from edge.watch.prometheus import Exporter

        host, port = parse_hostport(args.prometheus, "--prometheus")
        try:
            exporter = Exporter(fleet, host, port)
        except BaseException:
            if dashboard is not None:
                dashboard.stop()
            raise
        print(f"edge-watch: Prometheus metrics on {exporter.url}", file=sys.stderr, flush=True)
    table = None if args.json else LiveTable(sys.stdout, broker=broker.redacted())
    watcher.start()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    status = 0
    drawn_version = -1
    last_plain = 0.0
    try:
        while not watcher.done.is_set():
            if watcher.connect_error:
                raise EdgeError(watcher.connect_error, "check the credentials in --broker")
            if deadline is not None and time.monotonic() >= deadline:
                if not watcher.connected.is_set():
                    # an unreachable broker must not look like a quiet fleet
                    print(
                        f"edge-watch: never connected to the broker at {broker.redacted()} in "
                        f"{args.timeout:g} s: is it running, and is the address right?",
                        file=sys.stderr,
                    )
                    status = 1
                elif args.count is not None:
                    print(
                        f"edge-watch: timed out after {args.timeout:g} s with {watcher.seen} of "
                        f"{args.count} messages",
                        file=sys.stderr,
                    )
                    status = 1
                break
            watcher.done.wait(args.interval)
            if table is not None:
                # a terminal redraws in place every tick ("seen 3s ago" moves); a pipe or log file
                # only gets a new table when something changed, and at most every 5 s
                if table.ansi or (fleet.version != drawn_version and time.monotonic() - last_plain >= 5):
                    drawn_version = fleet.version
                    last_plain = time.monotonic()
                    table.draw(fleet.snapshot(), note=_connection_note(watcher, broker))
    finally:
        # the footer says how things were before we hung up, not "not connected" because we did
        final_note = _connection_note(watcher, broker)
        watcher.stop()
        if dashboard is not None:
            dashboard.stop()
        if exporter is not None:
            exporter.stop()
    if watcher.pipe_closed:
        # stdout is a closed pipe: point it at /dev/null so the interpreter's final flush stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if table is not None and (table.ansi or fleet.version != drawn_version):
        table.draw(fleet.snapshot(), note=final_note)
    return status


if __name__ == "__main__":
    sys.exit(main())
