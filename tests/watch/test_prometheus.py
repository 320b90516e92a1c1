"""edge-watch --prometheus: a real scrape of the real HTTP endpoint, fed by a real agent over a real
mosquitto; and docs/monitoring (Grafana dashboard, alert rules) name only series the exporter exports."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from edge.watch.prometheus import FAMILIES, Exporter
from edge.watch.state import Fleet
from tests.support import ROOT, samples
from tests.support.broker import Mosquitto, free_port
from tests.watch.test_agent_integration import start_agent

DOCS = ROOT / "docs" / "monitoring"
SERIES_NAME = re.compile(r"\b(edge_[a-z0-9_]+)\b")


def scrape(url: str) -> dict[str, list[Any]]:
    """Sample name -> samples, parsed with prometheus_client's own parser."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(found: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    for s in found.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def _full_fleet() -> Fleet:
    fleet = Fleet(drift_min=10)
    fleet.ingest("edge/pi-1/availability", b"online", retained=True)
    fleet.ingest("edge/pi-1/status", json.dumps(samples.status("pi-1")).encode(), retained=True)
    for counts in ({"cat": 20, "dog": 5}, {"cat": 2, "dog": 23}):
        m = samples.metrics("pi-1")
        m["labels"] = {"counts": counts, "other": 1}
        fleet.ingest("edge/pi-1/metrics", json.dumps(m).encode())
    fleet.ingest("edge/pi-2/availability", b"offline", retained=True)
    fleet.ingest("edge/pi-2/metrics", b"{not json")
    return fleet


def test_exporter_serves_every_family_and_skips_dead_devices_live_values() -> None:
    exporter = Exporter(_full_fleet(), "127.0.0.1", 0)
    try:
        found = scrape(exporter.url)
    finally:
        exporter.stop()
    names = {n.removesuffix("_total") for n in found}
    assert set(FAMILIES) <= names, set(FAMILIES) - names
    assert value(found, "edge_device_online", device="pi-1") == 1.0
    assert value(found, "edge_device_online", device="pi-2") == 0.0
    assert value(found, "edge_inferences_per_second", device="pi-2") is None  # offline: no stale rate
    assert value(found, "edge_device_info", device="pi-1", model_sha256=samples.SHA) == 1.0
    assert value(found, "edge_inference_latency_seconds", device="pi-1", percentile="99") == 0.008
    assert value(found, "edge_predicted_labels", device="pi-1", label="dog") == 23
    assert value(found, "edge_predicted_labels", device="pi-1", label="other") == 1
    assert value(found, "edge_prediction_drift_psi", device="pi-1") > 0.25  # cat-heavy -> dog-heavy
    assert value(found, "edge_watch_malformed_messages_total") == 1
    assert value(found, "edge_cpu_temperature_celsius", device="pi-1") == 51.2


def _exported_names() -> set[str]:
    exporter = Exporter(_full_fleet(), "127.0.0.1", 0)
    try:
        return set(scrape(exporter.url))
    finally:
        exporter.stop()


def test_alert_rules_are_valid_and_use_exported_series() -> None:
    doc = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert all(isinstance(g["name"], str) and g["rules"] for g in doc["groups"])
    assert {r["alert"] for r in rules} == {
        "EdgeDeviceOffline",
        "EdgeLatencyP99Regression",
        "EdgePredictionDrift",
        "EdgeSpoolGrowing",
    }
    exported = _exported_names()
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r
        assert re.fullmatch(r"\d+[smhd]", r["for"]), r["for"]
        assert r["annotations"]["summary"] and r["labels"]["severity"]
        used = set(SERIES_NAME.findall(r["expr"]))
        assert used and used <= exported, (r["alert"], used - exported)


def test_grafana_dashboard_uses_exported_series() -> None:
    dash = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    exported = _exported_names()
    used = {n for e in exprs for n in SERIES_NAME.findall(e)}
    assert used - exported == set()
    # every family is on the dashboard somewhere (info and last-seen age are for the table/alerts)
    missing = {f for f in FAMILIES if not any(n.startswith(f) for n in used)}
    assert missing <= {"edge_device_last_seen_age_seconds", "edge_predictions"}, missing
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_real_agent_scraped_through_edge_watch(
    mosquitto: Mosquitto, spawn: Any, coral: Path, tmp_path: Path
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(coral / "cat.bmp", images / "cat.bmp")
    shutil.copy(coral / "hot_dog.jpg", images / "hot_dog.jpg")
    model = coral / "mobilenet_v1_0.25_128_quant.tflite"
    port = free_port()
    watch = spawn(
        "--broker", mosquitto.url, "--prometheus", f"127.0.0.1:{port}", "--drift-min", "1", "--timeout", "120"
    )
    agent = start_agent(
        mosquitto,
        tmp_path,
        images,
        "--model",
        str(model),
        "--labels",
        str(coral / "imagenet_labels.txt"),
        "--metrics-interval",
        "0.5",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 90
        found: dict[str, list[Any]] = {}
        while time.monotonic() < deadline:
            try:
                found = scrape(url)
            except OSError:
                found = {}
            labels = [s for s in found.get("edge_predicted_labels", []) if s.labels["label"] != "other"]
            if sum(s.value for s in labels) >= 2 and "edge_prediction_drift_psi" in found:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no label histogram scraped in 90 s: {sorted(found)}")
        assert value(found, "edge_device_online", device="t1") == 1.0
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        assert value(found, "edge_device_info", device="t1", model_sha256=sha, delegate="cpu") == 1.0
        assert value(found, "edge_inferences_per_second", device="t1") > 0
        p50 = value(found, "edge_inference_latency_seconds", device="t1", percentile="50")
        assert p50 is not None and 0 < p50 < 5
        assert value(found, "edge_spool_depth", device="t1") is not None
        assert value(found, "edge_inference_errors_total", device="t1") == 0
        assert value(found, "edge_prediction_drift_psi", device="t1") == 0.0  # nothing changed yet
    finally:
        agent.terminate()
        assert agent.wait(30) == 0
    deadline = time.monotonic() + 20
    while value(scrape(url), "edge_device_online", device="t1") != 0.0:
        assert time.monotonic() < deadline, "the agent stopped but edge_device_online stayed 1"
        time.sleep(0.3)
    assert value(scrape(url), "edge_inferences_per_second", device="t1") is None
    watch.kill()
