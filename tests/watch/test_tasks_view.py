"""edge-watch with the new prediction kinds: the LAST summary per task, SEEN from the message's own
timestamp, --kind, and the exit footer."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from edge.contract import messages, schemas
from edge.watch.state import Fleet, summary
from edge.watch.table import rows
from tests.support import samples
from tests.support.broker import Mosquitto
from tests.support.mqtt import publish
from tests.support.process import Proc, run_module


def pred(kind: str, **fields: Any) -> dict[str, Any]:
    return messages.prediction(
        "cam1",
        seq=1,
        source="f.jpg",
        model_sha256="0" * 64,
        latency_ms={"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5, "total": 3.5},
        kind=kind,
        result_key="",
        result=None,
        fields=fields,
    )


def det(label: str | None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "label": label, "score": 0.9, "box": [0.1, 0.1, 0.2, 0.2]}


def test_summary_per_task() -> None:
    cases = [
        (
            pred(
                "detector",
                detections=[det("person"), det("dog", 1), det("person")],
                counts={"person": 2, "dog": 1},
            ),
            "person x2, dog",
        ),
        (pred("detector", detections=[det(None, 7)]), "7"),  # an older agent without counts
        (pred("detector", detections=[], counts={}), "nothing"),
        (
            pred(
                "segmentation",
                segments=[
                    {"index": 0, "label": "background", "fraction": 0.59},
                    {"index": 8, "label": "cat", "fraction": 0.41},
                ],
            ),
            "cat 41 %",
        ),
        (pred("pose", keypoints=[], pose_score=0.8712), "pose 0.87"),
        (
            pred("pose", poses=[{"pose_score": 0.9, "keypoints": []}, {"pose_score": 0.4, "keypoints": []}]),
            "2 poses, best 0.90",
        ),
        (
            pred("embedding", embedding={"dim": 128, "norm": 1.0, "values": [], "truncated": True}),
            "dim 128, |v| 1",
        ),
        (pred("classifier", top_k=[{"index": 3, "label": "tabby", "score": 0.7}]), "tabby"),
    ]
    for payload, text in cases:
        assert schemas.problems("predictions", payload) == [] or payload["kind"] == "pose", payload
        assert summary(payload) == text


def test_table_shows_the_summary_and_seen_comes_from_the_message_ts() -> None:
    fleet = Fleet()
    now = time.time()
    old = pred("detector", detections=[det("person"), det("person")], counts={"person": 2})
    old["ts"] = messages.utc_iso(now - 7200)  # published two hours ago, delivered now (retained/replayed)
    assert fleet.ingest("edge/cam1/predictions", json.dumps(old).encode(), now=now) is not None
    fleet.ingest("edge/cam1/availability", b"offline", retained=True, now=now)
    (row,) = rows(fleet.snapshot(now=now))
    assert row[4] == "person x2" and row[-1] == "2.0h ago", row
    # a live message moves SEEN; a message stamped in the future (skewed clock) counts as now
    fresh = dict(old, seq=2, ts=messages.utc_iso(now + 30))
    fleet.ingest("edge/cam1/predictions", json.dumps(fresh).encode(), now=now + 1)
    (row,) = rows(fleet.snapshot(now=now + 1))
    assert row[-1] == "0s ago"


def test_kind_filter_skips_the_retained_messages_and_the_footer_stays_connected(mosquitto: Mosquitto) -> None:
    """The documented `--json --kind predictions --count 1 | jq .payload.top_k[0]`: the retained
    availability and status arrive first and must not be the one message printed."""
    publish(
        mosquitto, [("edge/pi-1/status", samples.status()), ("edge/pi-1/availability", "online")], retain=True
    )
    watch = Proc(
        [
            sys.executable,
            "-m",
            "edge.watch",
            "--broker",
            mosquitto.url,
            "--json",
            "--kind",
            "predictions",
            "--count",
            "1",
            "--timeout",
            "60",
        ]
    )
    time.sleep(1.0)  # subscribed: the retained ones have been delivered (and skipped)
    publish(mosquitto, [("edge/pi-1/predictions", samples.prediction(seq=5))])
    rc, lines, err = watch.finish(60)
    assert rc == 0, err
    (line,) = lines
    msg = json.loads(line)
    assert msg["kind"] == "predictions" and msg["payload"]["top_k"][0]["label"] == "seven"
    # table mode after messages: the exit footer must not claim we never connected
    r = run_module("edge.watch", "--broker", mosquitto.url, "--timeout", "2", timeout=60)
    assert r.returncode == 0 and "pi-1" in r.stdout
    assert "not connected" not in r.stdout.splitlines()[-1], r.stdout
