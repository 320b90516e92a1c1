"""The live dashboard: HTTP endpoints read directly, and the page rendered by a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.support import samples
from tests.support.broker import Mosquitto, free_port, wait_port
from tests.support.mqtt import publish

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"


class Dom(HTMLParser):
    """Elements as (tag, attrs, text) — enough to assert on what the page rendered."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        e = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(e)
        if tag not in ("br", "img", "meta", "link", "input", "line", "polyline", "circle"):
            self._open.append(e)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for e in self._open:
            e["text"] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag
            and all(
                (e["attrs"].get(k.rstrip("_")) or "").split().count(v)
                if k.rstrip("_") == "class"
                else e["attrs"].get(k.rstrip("_")) == v
                for k, v in attrs.items()
            )
        ]


def chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_dashboard(spawn: Any, broker: Mosquitto) -> str:
    port = free_port()
    # short event streams: headless Chromium's virtual clock stands still while a request is open
    spawn("--broker", broker.url, "--web", f"127.0.0.1:{port}", "--sse-seconds", "2", "--timeout", "120")
    assert wait_port("127.0.0.1", port, timeout=30)
    return f"http://127.0.0.1:{port}/"


def fill(broker: Mosquitto, url: str, n: int) -> None:
    publish(
        broker,
        [
            ("edge/pi-1/status", samples.status()),
            ("edge/pi-1/availability", "online"),
            ("edge/pi-2/availability", "offline"),
        ],
        retain=True,
    )
    publish(
        broker,
        [
            ("edge/pi-1/predictions", samples.prediction(seq=i, total=3.0 + i % 5, label="seven"))
            for i in range(1, n + 1)
        ]
        + [("edge/pi-1/metrics", b"{garbage")],
    )
    # wait until edge-watch has taken everything in
    for _ in range(100):
        state = json.load(urllib.request.urlopen(url + "api/state", timeout=5))
        if state["malformed"] == 1 and sum(d["predictions"] for d in state["devices"]) == n:
            return
        __import__("time").sleep(0.1)
    raise AssertionError(f"edge-watch did not see the messages: {state}")


def test_state_and_event_stream_endpoints(mosquitto: Mosquitto, spawn: Any) -> None:
    url = start_dashboard(spawn, mosquitto)
    fill(mosquitto, url, 5)
    page = urllib.request.urlopen(url, timeout=5).read().decode()
    assert '<svg id="chart"' in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//|@import|fetch\([\"']http", page)  # no CDN
    with urllib.request.urlopen(url + "events", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        lines = []
        for raw in stream:
            lines.append(raw.decode())
            if raw.startswith(b"data: "):
                break
    event = json.loads(lines[-1][len("data: ") :])
    assert "event: state\n" in lines
    assert [d["device"] for d in event["devices"]] == ["pi-1", "pi-2"]
    assert len(event["devices"][0]["latency_series"]) == 5 and event["malformed"] == 1
    try:
        urllib.request.urlopen(url + "nope", timeout=5)
        raise AssertionError("404 expected")
    except urllib.error.HTTPError as err:
        assert err.code == 404


def test_chromium_shows_the_devices_and_a_latency_chart(
    mosquitto: Mosquitto, spawn: Any, tmp_path: Path
) -> None:
    url = start_dashboard(spawn, mosquitto)
    n = 24
    fill(mosquitto, url, n)
    r = chromium(url, tmp_path, "--virtual-time-budget=1500", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    (tmp_path / "dom.html").write_text(r.stdout)
    dom = Dom(r.stdout)
    body = dom.find("body")[0]
    assert int(body["attrs"].get("data-events", 0)) >= 1, "no server-sent event reached the page"
    rows = {e["attrs"]["data-device"]: e for e in dom.find("tr", class_="device")}
    assert sorted(rows) == ["pi-1", "pi-2"]
    cells = {
        td["attrs"]["class"]: td["text"].strip()
        for td in dom.find("td")
        if td in dom.elements[dom.elements.index(rows["pi-1"]) : dom.elements.index(rows["pi-2"])]
    }
    assert cells["avail online"] == "online" and cells["label"] == "seven"
    assert cells["model"] == "digits_int8.tflite" and cells["runtime"] == "ai-edge-litert 2.3.0 / cpu"
    assert float(cells["num p99"]) == 7.0  # nearest-rank p99 of 3..7 ms
    assert [e["text"].strip() for e in dom.find("td", class_="avail")][1] == "offline"
    assert dom.find("span", id="malformed")[0]["text"].strip() == "1"
    series = dom.find("polyline", class_="series")
    assert [s["attrs"]["data-device"] for s in series] == ["pi-1"]
    points = [tuple(map(float, p.split(","))) for p in series[0]["attrs"]["points"].split()]
    assert len(points) == n
    assert len({y for _, y in points}) == 5  # five distinct latencies drawn at five heights
    assert all(a[0] < b[0] for a, b in zip(points, points[1:]))

    shot = tmp_path / "dashboard.png"
    r = chromium(url, tmp_path, "--virtual-time-budget=500", f"--screenshot={shot}", "--window-size=1200,800")
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
