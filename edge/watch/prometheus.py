"""``edge-watch --prometheus HOST:PORT``: the fleet model as Prometheus series, read at scrape time.

A custom collector reads :class:`edge.watch.state.Fleet` on every scrape, so the exporter keeps no
second copy of the fleet and can never disagree with the table or the web dashboard. Series per
device (label ``device``); what the agent's metrics message carries is exported only while the device
is online, so a dead device's last rate does not look alive. Names follow Prometheus conventions
(base units: seconds, bytes, celsius).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edge.errors import EdgeError
from edge.watch.drift import OTHER
from edge.watch.state import Fleet

# Every series family this exporter can produce (name -> help). docs/grafana and docs/prometheus are
# checked against what a real scrape returns (tests/watch/test_prometheus.py), not against this table.
FAMILIES: dict[str, str] = {
    "edge_device_online": "1 while the device's retained availability says online, else 0",
    "edge_device_info": "constant 1; the labels describe the device's model, runtime and board",
    "edge_device_last_seen_age_seconds": "seconds since any message of the device arrived",
    "edge_inferences_per_second": "inferences per second over the agent's metrics window",
    "edge_inference_latency_seconds": "total latency percentile (label percentile: 50, 90, 99) over the agent's metrics window",
    "edge_inference_errors": "inputs the agent could not process since it started",
    "edge_predictions": "predictions the agent made since it started",
    "edge_spool_depth": "messages waiting in the agent's spool (the broker has not acknowledged them)",
    "edge_spool_dropped": "spool messages dropped for size or age since the agent started",
    "edge_cpu_temperature_celsius": "CPU temperature (absent where the board does not expose it)",
    "edge_agent_resident_memory_bytes": "the agent's resident set size",
    "edge_predicted_labels": "predictions of each label in the metrics window (top 20 + other)",
    "edge_prediction_drift_psi": "population stability index of the label histogram vs the device's baseline",
    "edge_watch_messages": "valid messages edge-watch received",
    "edge_watch_malformed_messages": "messages that broke the contract",
}
INFO_LABELS = ("model_sha256", "model_version", "runtime", "delegate", "arch", "board", "agent_version")
# "percentile", not "quantile": Prometheus keeps that label for summaries, which need _sum and _count
PERCENTILES = (("50", "latency_p50_ms"), ("90", "latency_p90_ms"), ("99", "latency_p99_ms"))


class FleetCollector:
    """A prometheus_client collector over a Fleet (duck-typed: ``collect()`` yields metric families)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def describe(self) -> list[Any]:
        return []  # no fixed set up front: devices come and go

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.fleet.snapshot()

        def gauge(name: str, labels: tuple[str, ...] = ("device",)) -> Any:
            return GaugeMetricFamily(name, FAMILIES[name], labels=list(labels))

        def counter(name: str) -> Any:
            return CounterMetricFamily(name, FAMILIES[name], labels=["device"])

        online = gauge("edge_device_online")
        info = gauge("edge_device_info", ("device", *INFO_LABELS))
        age = gauge("edge_device_last_seen_age_seconds")
        rate = gauge("edge_inferences_per_second")
        latency = gauge("edge_inference_latency_seconds", ("device", "percentile"))
        errors, preds = counter("edge_inference_errors"), counter("edge_predictions")
        depth, dropped = gauge("edge_spool_depth"), counter("edge_spool_dropped")
        temp, rss = gauge("edge_cpu_temperature_celsius"), gauge("edge_agent_resident_memory_bytes")
        labels = gauge("edge_predicted_labels", ("device", "label"))
        psi = gauge("edge_prediction_drift_psi")
        for d in snap["devices"]:
            dev = d["device"]
            is_online = d["availability"] == "online"
            online.add_metric([dev], 1.0 if is_online else 0.0)
            if d["model_sha256"] is not None:
                info.add_metric([dev, *("" if d[k] is None else str(d[k]) for k in INFO_LABELS)], 1.0)
            if d["last_seen_ago_s"] is not None:
                age.add_metric([dev], d["last_seen_ago_s"])
            if not is_online or d["metrics_ts"] is None:
                continue
            rate.add_metric([dev], d["inferences_per_s"])
            for q, key in PERCENTILES:
                if d[key] is not None:
                    latency.add_metric([dev, q], d[key] / 1000.0)
            errors.add_metric([dev], d["errors_reported"])
            preds.add_metric([dev], d["predictions_reported"])
            depth.add_metric([dev], d["spool_depth"])
            dropped.add_metric([dev], d["spool_dropped"])
            if d["cpu_temp_c"] is not None:
                temp.add_metric([dev], d["cpu_temp_c"])
            if d["rss_mb"] is not None:
                rss.add_metric([dev], d["rss_mb"] * 1024 * 1024)
            hist = d["labels"]
            if hist is not None:
                for label, n in hist["counts"].items():
                    labels.add_metric([dev, label], n)
                labels.add_metric([dev, OTHER.lstrip("\x00")], hist["other"])
            if d["drift_psi"] is not None:
                psi.add_metric([dev], d["drift_psi"])
        yield from (online, info, age, rate, latency, errors, preds, depth, dropped, temp, rss, labels, psi)
        seen = CounterMetricFamily("edge_watch_messages", FAMILIES["edge_watch_messages"])
        seen.add_metric([], snap["messages"])
        bad = CounterMetricFamily("edge_watch_malformed_messages", FAMILIES["edge_watch_malformed_messages"])
        bad.add_metric([], snap["malformed"])
        yield seen
        yield bad


class Exporter:
    """The HTTP endpoint (``/metrics``) on its own registry, served from a daemon thread."""

    def __init__(self, fleet: Fleet, host: str, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as err:
            raise EdgeError(
                "--prometheus needs the prometheus-client package",
                "pip install 'edge-ml-toolkit[watch]' (or pip install prometheus-client)",
            ) from err
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FleetCollector(fleet))
        try:
            self.server, self.thread = start_http_server(port, host, registry=self.registry)
        except OSError as err:
            raise EdgeError(
                f"cannot serve Prometheus metrics on {host}:{port}: {err}",
                "pick a free port for --prometheus HOST:PORT",
            ) from err
        self.host, self.port = host, int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
