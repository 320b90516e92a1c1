"""The fleet model and the terminal table, fed directly (the MQTT path is in test_cli.py)."""

from __future__ import annotations

import io
import json

import pytest

from edge.watch.state import Fleet, Malformed, Message, percentile
from edge.watch.table import LiveTable, render
from tests.support import samples


def feed(fleet: Fleet, topic: str, payload: object, now: float | None = None) -> object:
    raw = (
        payload
        if isinstance(payload, bytes)
        else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    )
    return fleet.ingest(topic, raw, now=now)


def test_a_device_builds_up_from_its_messages() -> None:
    fleet = Fleet()
    feed(fleet, "edge/pi-1/availability", "online", now=1000.0)  # one clock for the whole test
    feed(fleet, "edge/pi-1/status", samples.status(), now=1000.0)
    for seq, total in enumerate([3.0, 5.0, 4.0, 100.0], start=1):
        feed(fleet, "edge/pi-1/predictions", samples.prediction(seq=seq, total=total), now=1000.0 + seq)
    d = fleet.snapshot(now=1006.0)["devices"][0]
    assert d["device"] == "pi-1" and d["availability"] == "online"
    assert d["model"] == "digits_int8.tflite" and d["runtime"] == "ai-edge-litert 2.3.0"
    assert d["delegate"] == "cpu" and d["last_label"] == "seven" and d["last_seq"] == 4
    # no metrics yet: percentiles come from the predictions seen
    assert d["latency_source"] == "predictions"
    assert d["latency_p50_ms"] == 4.0 and d["latency_p99_ms"] == 100.0
    assert d["inferences_per_s"] == 0.4  # 4 in the last 10 s
    assert [p[1] for p in d["latency_series"]] == [3.0, 5.0, 4.0, 100.0]
    assert d["last_seen_ago_s"] == 2.0
    feed(fleet, "edge/pi-1/metrics", samples.metrics(p50=7.5, rate=12.0))
    d = fleet.snapshot()["devices"][0]
    assert (d["latency_source"], d["latency_p50_ms"], d["latency_p99_ms"]) == ("metrics", 7.5, 15.0)
    assert d["inferences_per_s"] == 12.0 and d["spool_depth"] == 3 and d["cpu_temp_c"] == 51.2


def test_replayed_predictions_are_deduplicated_on_seq() -> None:
    fleet = Fleet()
    for seq in (1, 2, 3):
        feed(fleet, "edge/pi-1/predictions", samples.prediction(seq=seq))
    feed(fleet, "edge/pi-1/predictions", samples.prediction(seq=2, historical=True))
    d = fleet.snapshot()["devices"][0]
    assert (d["predictions"], d["duplicates"], d["last_seq"]) == (3, 1, 3)
    assert len(d["latency_series"]) == 3


@pytest.mark.parametrize("validator", ["auto", "builtin"])
def test_malformed_messages_are_counted_and_never_raise(validator: str) -> None:
    fleet = Fleet(validator=validator)
    bad_schema = samples.prediction()
    del bad_schema["seq"]
    cases = {
        "edge/pi-1/predictions": b"\xff\xfe not utf-8",
        "edge/pi-2/predictions": b"{not json",
        "edge/pi-3/predictions": json.dumps(bad_schema).encode(),
        "edge/pi-4/status": json.dumps(samples.status("someone-else")).encode(),
        "edge/pi-5/availability": b"maybe",
        "edge/pi-6/metrics": b"null",
        "edge/pi-7/errors": b"[]",
    }
    results = [fleet.ingest(t, raw) for t, raw in cases.items()]
    assert all(isinstance(r, Malformed) for r in results), results
    reasons = [r.reason for r in results]  # type: ignore[union-attr]
    assert "UTF-8" in reasons[0] and "not JSON" in reasons[1] and "seq" in reasons[2]
    assert "someone-else" in reasons[3]
    snap = fleet.snapshot()
    assert snap["malformed"] == len(cases) and snap["devices"] == [] and snap["messages"] == 0
    # ...and good messages still get through afterwards
    assert isinstance(feed(fleet, "edge/pi-1/availability", "offline"), Message)
    assert fleet.snapshot()["devices"][0]["availability"] == "offline"


def test_inputs_and_foreign_topics_are_ignored_not_counted() -> None:
    fleet = Fleet()
    assert fleet.ingest("edge/pi-1/infer", b"\x89PNG...") is None
    assert fleet.ingest("edge/pi-1/cmd", b'{"id": "1", "action": "ping"}') is None
    assert fleet.ingest("zigbee2mqtt/lamp", b"{}") is None
    assert fleet.snapshot()["malformed"] == 0


def test_device_filter() -> None:
    fleet = Fleet(device="pi-2")
    assert feed(fleet, "edge/pi-1/availability", "online") is None
    assert isinstance(feed(fleet, "edge/pi-2/availability", "online"), Message)
    assert [d["device"] for d in fleet.snapshot()["devices"]] == ["pi-2"]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_table_shows_every_column_and_redraws_in_place() -> None:
    fleet = Fleet()
    feed(fleet, "edge/pi-1/availability", "online")
    feed(fleet, "edge/pi-1/status", samples.status())
    feed(fleet, "edge/pi-1/predictions", samples.prediction(seq=1, total=4.25, score=0.875))
    feed(fleet, "edge/pi-1/metrics", samples.metrics(p50=4.0, rate=2.5))
    feed(fleet, "edge/pi-2/availability", "offline")
    fleet.ingest("edge/pi-3/status", b"garbage")
    lines = render(fleet.snapshot(), color=False)
    pi1 = next(line for line in lines if line.startswith("pi-1"))
    for cell in (
        "online",
        "digits_int8.tflite",
        "ai-edge-litert 2.3.0/cpu",
        "seven",
        "0.875",
        "4.00",
        "8.00",
        "2.50",
        "3",
        "0s ago",
    ):
        assert cell in pi1, (cell, pi1)
    assert any(line.startswith("pi-2") and "offline" in line for line in lines)
    assert "1 malformed" in lines[-1] and "edge/pi-3/status" in lines[-1]
    out = io.StringIO()
    table = LiveTable(out, ansi=True)
    table.draw(fleet.snapshot())
    table.draw(fleet.snapshot())
    text = out.getvalue()
    # the second drawing moves the cursor up over the first one and clears below
    assert f"\x1b[{len(lines)}F\x1b[J" in text and "\x1b[32monline" in text and "\x1b[31moffline" in text
