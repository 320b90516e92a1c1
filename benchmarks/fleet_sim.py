"""Hundreds of simulated devices against a real mosquitto: edge-fleet ls time, edge-watch ingest, broker CPU.

No real Coral or Raspberry Pi can be had here, so each simulated device runs the agent's real transport and
contract code: an MqttClient (with the agent's last will), a Spool (its own SQLite file) and an Outbox, the
real payload builders (edge.contract.messages) and the real metrics window with its label histogram. Only
the interpreter is a stand-in: a few random uint8 class scores per "inference", ranked the way the real
postprocess does. Many devices share one process (``--procs`` worker processes).

Phases, in one run:
1. every device connects, publishes ``online`` and its retained status (as the agent does);
2. steady traffic for ``--duration`` s: ``--rate`` predictions/s per device (QoS 1 through the spool),
   metrics every ``--metrics-interval`` s (QoS 0); meanwhile ``edge-fleet ls --json`` runs ``--ls-runs``
   times (the real CLI, a subprocess) and ``edge-watch --json`` (a subprocess) reads everything;
3. every outbox flushes; the run counts predictions sent vs received by edge-watch (unique device/seq).

CPU (user+system, from /proc) of mosquitto, edge-watch and the simulator is taken over the steady phase.
Targets (issue 15): ``edge-fleet ls`` <= 5 s for 500 devices; no prediction lost.

The machine is small and shared: the default run is 500 devices for 60 s (about 2 minutes in all).

    python benchmarks/fleet_sim.py [--devices 500] [--procs 5] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agent.metrics import LatencyWindow, predicted_labels  # noqa: E402
from edge.contract import messages  # noqa: E402
from edge.transport.topics import Topics  # noqa: E402

LS_TARGET_S = 5.0
# paho's network loop uses select(), which cannot watch a descriptor numbered 1024 or above; a simulated
# device holds about 6 (socket, paho's wake-up pair, the spool's SQLite db/WAL/shm), so more than ~150
# devices in one process make paho drop connections. A real agent is one device per process.
DEVICES_PER_PROC = 100
LABELS = ("cat", "dog", "bird", "car", "person", "bicycle", "tree", "house", "boat", "train")
CLK = os.sysconf("SC_CLK_TCK")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def cpu_seconds(pid: int) -> float:
    """user + system CPU of one process (and its reaped children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK


# ----------------------------------------------------------------------------------------- worker side
class StandInInterpreter:
    """What a TFLite interpreter gives the agent, without a model: uint8 class scores."""

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)
        # every device has its own scene: a skewed, fixed label mix
        self.bias = self.rng.integers(0, 120, size=len(LABELS), dtype=np.int64)

    def invoke(self) -> list[dict[str, Any]]:
        import numpy as np

        y = np.clip(self.rng.integers(0, 136, size=len(LABELS)) + self.bias, 0, 255).astype(np.uint8)
        order = np.argsort(y)[::-1][:3]  # uint8: never argsort(-y)
        return [{"index": int(i), "label": LABELS[i], "score": round(float(y[i]) / 255, 4)} for i in order]


class SimDevice:
    def __init__(self, device: str, broker: str, state: Path, seed: int) -> None:
        from edge.transport.client import MqttClient, Will
        from edge.transport.outbox import Outbox
        from edge.transport.spool import Spool

        self.device = device
        self.topics = Topics("edge", device)
        self.window = LatencyWindow(60.0)
        self.interp = StandInInterpreter(seed)
        self.client = MqttClient(
            broker,
            f"edge-agent-{device}",
            will=Will(self.topics.availability, messages.OFFLINE.encode(), qos=1, retain=True),
            keepalive=60,
            backoff_min=0.5,
            backoff_max=5,
        )
        self.spool = Spool(state / f"{device}.db")
        self.outbox = Outbox(self.client, self.spool)
        self.client.on_connect(self._on_connect)
        self.sent = 0
        self.last_seq = 0
        self.errors = 0
        sha = hashlib.sha256(b"stand-in model").hexdigest()
        tensor = {"name": "x", "shape": [1, 224, 224, 3], "dtype": "uint8", "quantization": None}
        self.status = messages.status(
            device,
            agent_version="sim",
            started_at=messages.utc_iso(),
            model={
                "path": "/models/stand_in.tflite",
                "sha256": sha,
                "size_bytes": 1,
                "inputs": [tensor],
                "outputs": [{**tensor, "shape": [1, len(LABELS)]}],
            },
            runtime={"name": "stand-in", "version": None},
            delegate="cpu",
            notes=["simulated by benchmarks/fleet_sim.py"],
            arch="sim",
            board="simulated board",
            hostname=device,
            python=platform.python_version(),
            threads=1,
            source="fleet_sim",
            kind="classifier",
        )

    def _on_connect(self) -> None:  # as the agent: online, then the retained status
        self.client.publish(self.topics.availability, messages.ONLINE, 1, True)
        self.client.publish(self.topics.status, json.dumps(self.status), 1, True)

    def start(self) -> None:
        self.outbox.start()
        self.client.start()

    def infer(self) -> None:
        t = time.perf_counter()
        top = self.interp.invoke()
        latency = {"preprocess": 0.4, "inference": 5.0 + (time.perf_counter() - t) * 1000, "postprocess": 0.1}
        latency["total"] = sum(latency.values())
        self.window.add(latency["total"], labels=predicted_labels("top_k", top))
        payload = messages.prediction(
            self.device,
            seq=0,
            source="sim",
            model_sha256=self.status["model_sha256"],
            latency_ms=latency,
            kind="classifier",
            result_key="top_k",
            result=top,
        )
        seq = self.outbox.send(self.topics.predictions, payload, qos=1, seq="predictions")
        if seq is not None:
            self.sent += 1
            self.last_seq = seq

    def metrics(self) -> None:
        stats = self.outbox.stats()
        body = messages.metrics(
            self.device,
            **self.window.snapshot(),
            rss_mb=None,
            cpu_temp_c=None,
            spool_depth=stats["spool_depth"],
            dropped=stats["dropped_qos0"],
            errors=0,
            predictions=self.sent,
        )
        self.client.publish(self.topics.metrics, json.dumps(body), 0, False)

    def stop(self) -> None:
        self.client.stop(messages.OFFLINE.encode())
        self.outbox.stop()
        self.spool.close()


def worker(args: argparse.Namespace) -> int:
    first, count = args.worker_range
    state = Path(args.state) / f"w{first}"
    state.mkdir(parents=True, exist_ok=True)
    devs = [SimDevice(f"sim-{i:05d}", args.broker, state, seed=i) for i in range(first, first + count)]
    t0 = time.monotonic()
    for d in devs:
        d.start()
    deadline = t0 + 120
    for d in devs:
        d.client.wait_connected(max(0.1, deadline - time.monotonic()))
    connected = sum(d.client.connected for d in devs)
    print(json.dumps({"ready": connected, "connect_s": round(time.monotonic() - t0, 3)}), flush=True)
    if sys.stdin.readline().strip() != "go":  # the parent says when the steady phase starts
        return 1
    start = time.monotonic()
    # spread every device's ticks over the period so the broker sees a steady stream, not bursts
    period = 1.0 / args.rate
    next_infer = [start + period * i / len(devs) for i in range(len(devs))]
    next_metrics = [start + args.metrics_interval * i / len(devs) for i in range(len(devs))]
    late = 0.0
    while True:
        now = time.monotonic()
        if now - start >= args.duration:
            break
        for i, d in enumerate(devs):
            if now >= next_infer[i]:
                late = max(late, now - next_infer[i])
                d.infer()
                next_infer[i] += period
            if now >= next_metrics[i]:
                d.metrics()
                next_metrics[i] += args.metrics_interval
        wake = min(min(next_infer), min(next_metrics))
        time.sleep(max(0.0, min(0.05, wake - time.monotonic())))
    flush_t = time.monotonic()
    flushed = sum(d.outbox.flush(60) for d in devs)
    flush_s = time.monotonic() - flush_t
    sent = {d.device: d.last_seq for d in devs}
    depth = sum(d.spool.depth() for d in devs)
    print(
        json.dumps(
            {
                "done": True,
                "sent": sent,
                "flushed": flushed,
                "flush_s": round(flush_s, 3),
                "spool_depth_after": depth,
                "max_lateness_s": round(late, 3),
            }
        ),
        flush=True,
    )
    # each stop waits for its offline PUBACK and its network thread: side by side, not one after another
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(SimDevice.stop, devs))
    return 0


# ----------------------------------------------------------------------------------------- parent side
class WatchReader:
    """edge-watch --json in a subprocess; counts what it validated, per kind, and the predictions' seqs."""

    def __init__(self, broker: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.watch", "--broker", broker, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.kinds: dict[str, int] = {}
        self.seqs: dict[str, set[int]] = {}
        self.lines = 0
        self.malformed = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.lock:
                self.lines += 1
                self.kinds[msg["kind"]] = self.kinds.get(msg["kind"], 0) + 1
                if msg["kind"] == "predictions":
                    self.seqs.setdefault(msg["device"], set()).add(msg["payload"]["seq"])

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "malformed" in line:
                with self.lock:
                    self.malformed += 1

    def count(self) -> int:
        with self.lock:
            return self.lines

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def fleet_ls(broker: str) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edge.fleet", "ls", "--broker", broker, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
    )
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"edge-fleet ls failed: {done.stderr}")
    return took, json.loads(done.stdout)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.broker import Mosquitto

    tmp = Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    broker = Mosquitto(workdir=tmp / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    assert broker.proc is not None
    watch = None
    workers: list[subprocess.Popen[str]] = []
    try:
        watch = WatchReader(broker.url)
        time.sleep(1.0)  # edge-watch subscribed before the first device speaks
        per = [
            args.devices // args.procs + (1 if i < args.devices % args.procs else 0)
            for i in range(args.procs)
        ]
        first = 0
        t0 = time.monotonic()
        for n in per:
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker-range",
                        str(first),
                        str(n),
                        "--broker",
                        broker.url,
                        "--state",
                        str(tmp / "state"),
                        "--rate",
                        str(args.rate),
                        "--metrics-interval",
                        str(args.metrics_interval),
                        "--duration",
                        str(args.duration),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env(),
                )
            )
            first += n
        ready = [json.loads(w.stdout.readline()) for w in workers]  # type: ignore[union-attr]
        connect_s = time.monotonic() - t0
        connected = sum(r["ready"] for r in ready)
        print(f"{connected}/{args.devices} devices connected in {connect_s:.1f} s", file=sys.stderr)

        # retained inventory of an idle fleet first, then again under traffic
        ls_idle_s, ls_doc = fleet_ls(broker.url)
        cpu0 = {
            "broker": cpu_seconds(broker.proc.pid),
            "watch": cpu_seconds(watch.proc.pid),
            "sim": sum(cpu_seconds(w.pid) for w in workers),
        }
        msgs0, wall0 = watch.count(), time.monotonic()
        for w in workers:
            w.stdin.write("go\n")  # type: ignore[union-attr]
            w.stdin.flush()  # type: ignore[union-attr]
        ls_runs: list[float] = []
        ls_listed: list[int] = []
        gap = args.duration / (args.ls_runs + 1)
        for _ in range(args.ls_runs):
            time.sleep(gap)
            took, doc = fleet_ls(broker.url)
            ls_runs.append(took)
            ls_listed.append(sum(d["online"] for d in doc["devices"]))
        done = [json.loads(w.stdout.readline()) for w in workers]  # type: ignore[union-attr]
        wall = time.monotonic() - wall0
        cpu1 = {
            "broker": cpu_seconds(broker.proc.pid),
            "watch": cpu_seconds(watch.proc.pid),
            "sim": sum(cpu_seconds(w.pid) for w in workers),
        }
        msgs = watch.count() - msgs0
        for w in workers:
            w.wait(60)
        time.sleep(2.0)  # the last offline messages reach edge-watch
    finally:
        if watch is not None:
            watch.stop()
        for w in workers:
            if w.poll() is None:
                w.kill()
        broker.stop()

    sent: dict[str, int] = {}
    for d in done:
        sent.update(d["sent"])
    total_sent = sum(sent.values())
    received = {dev: watch.seqs.get(dev, set()) for dev in sent}
    lost = sum(len(set(range(1, n + 1)) - received[dev]) for dev, n in sent.items())
    cpu = {k: (cpu1[k] - cpu0[k]) / wall for k in cpu0}
    msg_rate = msgs / wall
    return {
        "benchmark": "fleet_sim",
        "description": "simulated devices (real MqttClient/Spool/Outbox/payload builders, stand-in interpreter) "
        "against one local mosquitto; edge-fleet ls and edge-watch --json as subprocesses",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "devices": args.devices,
            "procs": args.procs,
            "duration_s": args.duration,
            "rate_per_device": args.rate,
            "metrics_interval_s": args.metrics_interval,
        },
        "connect_s": round(connect_s, 2),
        "connected": connected,
        "ls_idle_s": round(ls_idle_s, 3),
        "ls_idle_listed_online": sum(d["online"] for d in ls_doc["devices"]),
        "ls_busy_s": [round(x, 3) for x in ls_runs],
        "ls_busy_listed_online": ls_listed,
        "ls_target_s": LS_TARGET_S,
        "ls_worst_vs_target": round(max([ls_idle_s, *ls_runs]) / LS_TARGET_S, 3),
        "predictions_sent": total_sent,
        "predictions_received_unique": sum(len(s) for s in received.values()),
        "predictions_lost": lost,
        "watch_messages_by_kind": watch.kinds,
        "watch_malformed": watch.malformed,
        "steady_wall_s": round(wall, 2),
        "watch_ingest_msgs_per_s": round(msg_rate, 1),
        "cpu_cores_used": {k: round(v, 3) for k, v in cpu.items()},
        "watch_msgs_per_cpu_s": round(msgs / max(1e-9, cpu1["watch"] - cpu0["watch"]), 1),
        "flush_s_max": max(d["flush_s"] for d in done),
        "spool_depth_after": sum(d["spool_depth_after"] for d in done),
        "sim_max_lateness_s": max(d["max_lateness_s"] for d in done),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument(
        "--procs",
        type=int,
        help=f"worker processes the devices are spread over (default: one per {DEVICES_PER_PROC} devices)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of steady traffic")
    p.add_argument("--rate", type=float, default=0.2, help="predictions per second per device")
    p.add_argument("--metrics-interval", type=float, default=10.0)
    p.add_argument("--ls-runs", type=int, default=3, help="edge-fleet ls runs during the steady phase")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--worker-range", type=int, nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--broker", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_range:
        return worker(args)
    if args.procs is None:
        args.procs = -(-args.devices // DEVICES_PER_PROC)
    if args.devices < 1 or args.procs < 1 or args.duration <= 0 or args.rate <= 0:
        p.error("--devices, --procs, --duration and --rate must be positive")
    res = run(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = (
        res["ls_worst_vs_target"] <= 1.0 and res["predictions_lost"] == 0 and res["connected"] == args.devices
    )
    print(
        f"ls worst {max([res['ls_idle_s'], *res['ls_busy_s']]):.2f} s for {args.devices} devices "
        f"({res['ls_worst_vs_target']:.2f}x the 5 s target); {res['predictions_lost']} of "
        f"{res['predictions_sent']} predictions lost; edge-watch {res['watch_ingest_msgs_per_s']} msg/s "
        f"at {res['cpu_cores_used']['watch']:.2f} core; broker {res['cpu_cores_used']['broker']:.2f} core",
        file=sys.stderr,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
