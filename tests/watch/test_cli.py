"""edge-watch against a real mosquitto, messages published by a real paho client."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from edge.contract import schemas
from tests.support import samples
from tests.support.broker import Mosquitto
from tests.support.mqtt import publish
from tests.support.process import run_module


def test_json_streams_validated_messages_and_counts_malformed(mosquitto: Mosquitto, spawn: Any) -> None:
    publish(mosquitto, [("edge/pi-1/status", samples.status())], retain=True)
    watch = spawn("--broker", mosquitto.url, "--json", "--count", "6", "--timeout", "60")
    first = json.loads(watch.line())  # the retained status: edge-watch is subscribed from here on
    assert (first["kind"], first["device"], first["retained"]) == ("status", "pi-1", True)
    bad = samples.prediction(seq=9)
    bad["latency_ms"] = "fast"
    publish(
        mosquitto,
        [
            ("edge/pi-1/availability", "online"),
            ("edge/pi-1/predictions", b"\xff\xfe binary junk"),
            ("edge/pi-1/predictions", samples.prediction(seq=1)),
            ("edge/pi-1/predictions", bad),
            ("edge/pi-1/infer/abc", b"\x89PNG not for us"),
            ("edge/pi-1/metrics", samples.metrics()),
            ("edge/pi-2/errors", samples.error("pi-2")),
            ("edge/pi-1/cmd/result", samples.cmd_result(ok=False)),
            ("edge/pi-1/bench", samples.bench()),  # the 7th: must not be printed, --count 6 stops before
        ],
    )
    rc, rest, err = watch.finish()
    assert rc == 0, err
    lines = [first] + [json.loads(line) for line in rest]
    assert [m["kind"] for m in lines] == [
        "status",
        "availability",
        "predictions",
        "metrics",
        "errors",
        "cmd_result",
    ]
    for m in lines:
        assert m["topic"] == schemas.topic_for(m["kind"], m["device"])
        assert schemas.problems(m["kind"], m["payload"]) == []
    assert lines[2]["payload"]["seq"] == 1 and lines[4]["device"] == "pi-2"
    assert err.count("malformed message on edge/pi-1/predictions") == 2
    assert "latency_ms" in err and "not UTF-8" in err


def test_csv_logs_predictions_and_device_filter(mosquitto: Mosquitto, spawn: Any, tmp_path: Path) -> None:
    out = tmp_path / "logs" / "preds.csv"
    publish(mosquitto, [("edge/pi-1/availability", "online")], retain=True)
    watch = spawn(
        "--broker",
        mosquitto.url,
        "--device",
        "pi-1",
        "--json",
        "--csv",
        str(out),
        "--count",
        "4",
        "--timeout",
        "60",
    )
    assert json.loads(watch.line())["kind"] == "availability"
    publish(
        mosquitto,
        [
            ("edge/pi-2/predictions", samples.prediction("pi-2", seq=1)),  # filtered out
            ("edge/pi-1/predictions", samples.prediction(seq=1, total=3.5, label="three", score=0.75)),
            ("edge/pi-1/predictions", samples.detection(seq=2)),
            ("edge/pi-1/predictions", samples.generic(seq=3)),
        ],
    )
    rc, rest, err = watch.finish()
    assert rc == 0, err
    assert {json.loads(line)["device"] for line in rest} == {"pi-1"}
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["seq"], r["kind"], r["label"]) for r in rows] == [
        ("1", "classifier", "three"),
        ("2", "detector", "person"),
        ("3", "generic", ""),
    ]
    assert float(rows[0]["score"]) == 0.75 and float(rows[0]["latency_total_ms"]) == 3.5


def test_timeout_before_count_exits_1_and_table_mode_prints_the_fleet(mosquitto: Mosquitto) -> None:
    publish(
        mosquitto, [("edge/pi-1/status", samples.status()), ("edge/pi-1/availability", "online")], retain=True
    )
    publish(mosquitto, [("edge/pi-9/status", b"{broken")], retain=True)
    r = run_module("edge.watch", "--broker", mosquitto.url, "--count", "50", "--timeout", "3", timeout=60)
    assert r.returncode == 1
    assert "timed out after 3 s with 2 of 50 messages" in r.stderr
    table = r.stdout.splitlines()
    assert table[0].split()[:3] == ["DEVICE", "AVAIL", "MODEL"]
    assert any(
        line.startswith("pi-1") and "online" in line and "digits_int8.tflite" in line for line in table
    )
    assert "2 messages, 1 malformed" in table[-1] and "edge/pi-9/status" in table[-1]
    # without --count, a timeout is the normal way out
    r = run_module("edge.watch", "--broker", mosquitto.url, "--timeout", "1", "--json", timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr


def test_bad_arguments_are_explained() -> None:
    r = run_module("edge.watch", "--broker", "http://user:hunter2@x", "--timeout", "1", timeout=60)
    assert r.returncode == 2 and "unsupported scheme" in r.stderr and "hunter2" not in r.stderr
    r = run_module(
        "edge.watch", "--broker", "mqtt://127.0.0.1:1", "--count", "1", "--timeout", "1", timeout=60
    )
    assert r.returncode == 1 and "never connected to the broker at mqtt://127.0.0.1:1" in r.stderr
    assert "not connected to mqtt://127.0.0.1:1 yet" in r.stdout  # the table says so too
    r = run_module("edge.watch", "--broker", "mqtt://127.0.0.1:1", "--timeout", "1", "--json", timeout=60)
    assert r.returncode == 1 and "never connected" in r.stderr and r.stdout == ""


def test_on_a_terminal_the_table_is_redrawn_in_place(mosquitto: Mosquitto) -> None:
    import os
    import pty
    import subprocess
    import sys

    from tests.support.process import subprocess_env

    publish(
        mosquitto, [("edge/pi-1/status", samples.status()), ("edge/pi-1/availability", "online")], retain=True
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.watch",
            "--broker",
            mosquitto.url,
            "--timeout",
            "3",
            "--interval",
            "0.3",
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=subprocess_env(COLUMNS="160", LINES="30"),
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(30) == 0
    os.close(leader)
    out = b"".join(chunks).decode(errors="replace")
    redraws = out.count("\x1b[J")
    assert redraws >= 3, out[-2000:]  # cursor up + clear, once per tick
    assert "\x1b[32monline" in out  # availability in green
    last = out.rsplit("\x1b[J", 1)[1]
    assert "pi-1" in last and "digits_int8.tflite" in last and "2 messages, 0 malformed" in last


def test_a_reader_that_goes_away_ends_edge_watch_cleanly(mosquitto: Mosquitto) -> None:
    import subprocess
    import sys

    from tests.support.process import subprocess_env

    publish(mosquitto, [("edge/pi-1/availability", "online")], retain=True)
    # like `edge-watch --json | head -1`
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.watch", "--broker", mosquitto.url, "--json", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        assert json.loads(proc.stdout.readline())["kind"] == "availability"  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        started = time.monotonic()
        publish(mosquitto, [("edge/pi-1/predictions", samples.prediction(seq=i)) for i in range(1, 4)])
        assert proc.wait(20) == 0
        assert time.monotonic() - started < 15
        err = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert "Traceback" not in err and "BrokenPipe" not in err, err
    finally:
        proc.kill()
