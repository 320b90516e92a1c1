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
3. staged rollouts (``--no-rollout`` skips them): every device predicts ``--rollout-rate``/s and the real
   ``edge-fleet rollout`` (a subprocess) rolls out a stand-in model that mostly agrees (promoted on every
   device), then one of another task (stopped on the canaries); each device's ``model/set`` handling is a
   stand-in of the agent's around the real ``verify_message`` and contract messages (see SimDevice);
4. every outbox flushes; the run counts predictions sent vs received by edge-watch (unique device/seq) and
   ``model/set`` messages sent vs answered.

CPU (user+system, from /proc) of mosquitto, edge-watch and the simulator is taken over the steady phase.
Targets (issue 15): ``edge-fleet ls`` <= 5 s for 500 devices; a rollout to all in <= 2 min plus its windows;
no prediction or model/set message lost.

The machine is small and shared: the default run is 500 devices for 60 s, then the rollouts with 2 s windows
(about 2.5 minutes in all).

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
ROLLOUT_TARGET_S = 120.0  # issue 15: a rollout to all in <= 2 min plus its windows
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

    def invoke(self) -> tuple[list[dict[str, Any]], Any]:
        import numpy as np

        y = np.clip(self.rng.integers(0, 136, size=len(LABELS)) + self.bias, 0, 255).astype(np.uint8)
        order = np.argsort(y)[::-1][:3]  # uint8: never argsort(-y)
        top = [{"index": int(i), "label": LABELS[i], "score": round(float(y[i]) / 255, 4)} for i in order]
        return top, y


# A real 10-class TFLite classifier (14 kB): every stand-in model file is a valid flatbuffer, so
# edge-fleet rollout's up-front check (and anything else that parses it) takes it as a real model does.
STAND_IN_BASE = ROOT / "tests" / "data" / "keras_lstm_mnist_ptq.tflite"
STAND_IN_MARK = b"\n#edge-fleet-sim stand-in "  # after the flatbuffer, which ignores trailing bytes


def stand_in_model(noise: int = 0, permute: bool = False, name: str = "stand-in model") -> bytes:
    """A stand-in "model file": a real TFLite flatbuffer followed by what the simulated interpreter does
    with it (the bytes are what is signed, sent, hashed and verified, like a real model's; the trailer
    makes each variant's sha256 its own). ``noise``: amplitude added to the active model's scores (a
    retrained model that mostly agrees); ``permute``: another task's classes (agrees by chance)."""
    params = json.dumps({"stand_in": name, "noise": noise, "permute": permute}, sort_keys=True).encode()
    return STAND_IN_BASE.read_bytes() + STAND_IN_MARK + params


def stand_in_params(model: bytes) -> dict[str, Any]:
    """What :func:`stand_in_model` put after the flatbuffer."""
    _, mark, params = model.rpartition(STAND_IN_MARK)
    if not mark:
        raise ValueError("not a stand-in model of benchmarks/fleet_sim.py")
    doc: dict[str, Any] = json.loads(params)
    return doc


class SimDevice:
    """One simulated agent. Its ``model/set`` side is a faithful stand-in of the agent's (edge.ota.service
    + edge.agent.shadow, which load real TFLite models): the message is checked by the real
    :func:`edge.ota.manifest.verify_message` (signature, device, sizes, hashes, stage), the answers are the
    real ``cmd/result`` envelope with the contract's stage/reason/result fields, and a shadowing candidate
    publishes ``shadow`` windows with a real top-1 agreement between the active and candidate stand-ins."""

    def __init__(
        self, device: str, broker: str, state: Path, seed: int, public_keys: list[Any] | None = None
    ) -> None:
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
        self.client.subscribe(self.topics.model_set, self._on_update, qos=1)
        self.public_keys = public_keys or []
        self.updates: list[bytes] = []  # model/set messages, handled on the worker's loop (one thread)
        self.update_lock = threading.Lock()
        self.models: dict[str, bytes] = {}  # sha256 -> stand-in model bytes (active, previous)
        self.previous: tuple[str, str | None] | None = None  # (sha256, version) the last install replaced
        self.candidate: dict[str, Any] | None = None  # sha256, version, since, fraction, window_s, params
        self.shadow_acc: dict[str, Any] = {}
        self.answers = 0
        self.windows = 0
        self.sent = 0
        self.last_seq = 0
        self.errors = 0
        model = stand_in_model()
        sha = hashlib.sha256(model).hexdigest()
        self.models[sha] = model
        tensor = {"name": "x", "shape": [1, 224, 224, 3], "dtype": "uint8", "quantization": None}
        self.status = messages.status(
            device,
            agent_version="sim",
            started_at=messages.utc_iso(),
            model={
                "path": "/models/stand_in.tflite",
                "sha256": sha,
                "size_bytes": len(model),
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
        self.publish_status()

    def publish_status(self) -> None:
        self.status["ts"] = messages.utc_iso()
        self.client.publish(self.topics.status, json.dumps(self.status), 1, True)

    def _on_update(self, msg: Any) -> None:  # the network thread: only queue it
        with self.update_lock:
            self.updates.append(bytes(msg.payload))

    def handle_updates(self) -> None:
        with self.update_lock:
            todo, self.updates = self.updates, []
        for payload in todo:
            answer = self.handle_update(payload)
            body = messages.envelope(self.device, action="model/set", **answer)
            self.outbox.send(self.topics.cmd_result, body, qos=1)
            self.answers += 1

    def _serve(self, sha: str, model: bytes, version: str | None) -> None:
        old = self.status["model_sha256"]
        self.previous = (old, self.status.get("model_version"))
        self.models[sha] = model
        self.status["model_sha256"] = sha
        self.status["model"] = {**self.status["model"], "sha256": sha, "size_bytes": len(model)}
        self.status["model_version"] = version

    def handle_update(self, payload: bytes) -> dict[str, Any]:
        from edge.ota.manifest import UpdateRefusedError, header_id, verify_message

        cmd_id = header_id(payload)
        try:
            up = verify_message(payload, self.public_keys, device=self.device)
        except UpdateRefusedError as exc:
            return {"id": cmd_id, "ok": False, "reason": exc.reason, "error": exc.what, "fix": exc.fix}
        m = up.manifest
        active = self.status["model_sha256"]
        result = {"sha256": m.sha256, "version": m.version, "previous_sha256": active}
        answer: dict[str, Any] = {"id": cmd_id, "stage": m.stage, "ok": True, "result": result}
        if m.stage == "shadow":
            self.candidate = {
                "sha256": m.sha256,
                "version": m.version,
                "since": messages.utc_iso(),
                "fraction": m.shadow_fraction,
                "window_s": m.shadow_window_s,
                "params": stand_in_params(up.model),
                "model": up.model,
                "next": time.monotonic() + m.shadow_window_s,
            }
            self.shadow_acc = {"inputs": 0, "agree": 0, "lat_a": [], "lat_c": []}
        elif m.stage == "install":
            self._serve(m.sha256, up.model, m.version)
        elif m.stage == "activate":
            if self.candidate is not None and self.candidate["sha256"] == m.sha256:
                self._serve(m.sha256, self.candidate["model"], m.version)
                self.candidate = None
            elif self.previous is not None and self.previous[0] == m.sha256:  # a rollback
                self._serve(m.sha256, self.models[m.sha256], self.previous[1])
                result["rolled_back"] = True
            else:
                answer.update(ok=False, reason="no_candidate", error=f"no candidate {m.sha256[:12]}")
        elif m.stage == "drop":
            if self.candidate is not None and self.candidate["sha256"] == m.sha256:
                self.candidate = None
            else:
                answer.update(ok=False, reason="no_candidate", error=f"no candidate {m.sha256[:12]}")
        self.status["shadow"] = (
            None
            if self.candidate is None
            else {k: self.candidate[k] for k in ("version", "since", "fraction")}
            | {"candidate_sha256": self.candidate["sha256"]}
        )
        self.publish_status()
        return answer

    def shadow_run(self, scores: Any, latency_ms: float) -> None:
        """The candidate on the same input: the active stand-in's scores, perturbed as its model says."""
        import numpy as np

        assert self.candidate is not None
        p = self.candidate["params"]
        y = scores.astype(np.int64) + self.interp.rng.integers(-p["noise"], p["noise"] + 1, size=len(scores))
        if p["permute"]:
            y = y[::-1]
        acc = self.shadow_acc
        acc["inputs"] += 1
        acc["agree"] += int(np.argmax(y) == np.argmax(scores))
        acc["lat_a"].append(latency_ms)
        acc["lat_c"].append(latency_ms * 1.05)

    def shadow_window(self, now: float) -> None:
        import numpy as np

        c = self.candidate
        if c is None or now < c["next"]:
            return
        acc = self.shadow_acc
        n = acc["inputs"]

        def pct(xs: list[float]) -> dict[str, float | None]:
            if not xs:
                return {"p50": None, "p99": None}
            return {"p50": float(np.percentile(xs, 50)), "p99": float(np.percentile(xs, 99))}

        body = messages.envelope(
            self.device,
            candidate_sha256=c["sha256"],
            active_sha256=self.status["model_sha256"],
            task="classifier",
            inputs=n,
            skipped=0,
            agreement=None if n == 0 else acc["agree"] / n,
            metric="top1",
            latency_ms={"active": pct(acc["lat_a"]), "candidate": pct(acc["lat_c"])},
            errors=0,
            window_s=c["window_s"],
        )
        self.outbox.send(self.topics.shadow, body, qos=1)
        self.windows += 1
        self.shadow_acc = {"inputs": 0, "agree": 0, "lat_a": [], "lat_c": []}
        c["next"] = now + c["window_s"]

    def start(self) -> None:
        self.outbox.start()
        self.client.start()

    def infer(self) -> None:
        t = time.perf_counter()
        top, scores = self.interp.invoke()
        latency = {"preprocess": 0.4, "inference": 5.0 + (time.perf_counter() - t) * 1000, "postprocess": 0.1}
        if self.candidate is not None and self.interp.rng.random() < self.candidate["fraction"]:
            self.shadow_run(scores, latency["inference"])
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
    keys = []
    if args.update_key:
        from edge.ota.keys import load_public_key

        keys = [load_public_key(args.update_key)]
    devs = [
        SimDevice(f"sim-{i:05d}", args.broker, state, seed=i, public_keys=keys)
        for i in range(first, first + count)
    ]
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
    # later lines: "rate R" (predictions/s per device from now on), "stop" (end the steady phase)
    stop = threading.Event()
    rate = [args.rate]

    def read_commands() -> None:
        for line in sys.stdin:
            word, _, value = line.strip().partition(" ")
            if word == "rate":
                rate[0] = float(value)
            elif word == "stop":
                break
        stop.set()

    threading.Thread(target=read_commands, daemon=True).start()
    start = time.monotonic()
    # spread every device's ticks over the period so the broker sees a steady stream, not bursts
    cur_rate = args.rate
    period = 1.0 / args.rate
    next_infer = [start + period * i / len(devs) for i in range(len(devs))]
    next_metrics = [start + args.metrics_interval * i / len(devs) for i in range(len(devs))]
    late = 0.0
    while True:
        now = time.monotonic()
        if stop.is_set() or (now - start >= args.duration and not args.until_stop):
            break
        if rate[0] != cur_rate:
            cur_rate = rate[0]
            period = 1.0 / cur_rate
            next_infer = [now + period * i / len(devs) for i in range(len(devs))]
        for i, d in enumerate(devs):
            d.handle_updates()
            d.shadow_window(now)
            if now >= next_infer[i]:
                late = max(late, now - next_infer[i])
                d.infer()
                next_infer[i] += period
            if now >= next_metrics[i]:
                d.metrics()
                next_metrics[i] += args.metrics_interval
        wake = min(min(next_infer), min(next_metrics))
        time.sleep(max(0.0, min(0.02, wake - time.monotonic())))
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
                "model_set_answers": sum(d.answers for d in devs),
                "shadow_windows": sum(d.windows for d in devs),
                "serving": {d.device: d.status["model_sha256"] for d in devs},
                "shadowing": sum(d.candidate is not None for d in devs),
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


def say(workers: list[subprocess.Popen[str]], line: str) -> None:
    for w in workers:
        w.stdin.write(line + "\n")  # type: ignore[union-attr]
        w.stdin.flush()  # type: ignore[union-attr]


def fleet_rollout(broker: str, key: Path, model: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``edge-fleet rollout`` (the real CLI, a subprocess) to every simulated device; its --json and time."""
    cmd = [
        sys.executable,
        "-m",
        "edge.fleet",
        "rollout",
        str(model),
        "--broker",
        broker,
        "--key",
        str(key),
        "--devices",
        "sim-*",
        "--window",
        str(args.rollout_window),
        "--canary",
        str(args.rollout_canary),
        "--batch",
        str(args.rollout_batch),
        "--min-inputs",
        str(args.rollout_min_inputs),
        "--min-agreement",
        str(args.rollout_min_agreement),
        "--state-dir",
        str(tmp / "rollouts"),
        "--json",
    ]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env())
    took = time.perf_counter() - t
    if done.returncode not in (0, 3):
        raise SystemExit(f"edge-fleet rollout exited {done.returncode}: {done.stderr[-3000:]}")
    doc = json.loads(done.stdout)
    doc["wall_s"] = round(took, 3)
    doc["exit"] = done.returncode
    return doc


def rollout_phase(args: argparse.Namespace, broker: str, key: Path, tmp: Path) -> dict[str, Any]:
    """A better model (mostly agrees: promoted everywhere), then another task's (caught on the canaries)."""
    good, bad = tmp / "better.tflite", tmp / "other_task.tflite"
    good.write_bytes(stand_in_model(noise=1, name="better"))
    bad.write_bytes(stand_in_model(permute=True, name="other task"))
    time.sleep(1.0)  # the new rate reaches every device
    out = {
        "good": fleet_rollout(broker, key, good, tmp, args),
        "bad": fleet_rollout(broker, key, bad, tmp, args),
    }
    out["good_sha256"] = hashlib.sha256(good.read_bytes()).hexdigest()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.broker import Mosquitto

    tmp = Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    from edge.ota.keys import generate_keypair

    key, pub, _ = generate_keypair(tmp / "keys" / "update.key")
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
                        "--until-stop",
                        "--update-key",
                        str(pub),
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
        time.sleep(max(0.0, wall0 + args.duration - time.monotonic()))
        wall = time.monotonic() - wall0
        cpu1 = {
            "broker": cpu_seconds(broker.proc.pid),
            "watch": cpu_seconds(watch.proc.pid),
            "sim": sum(cpu_seconds(w.pid) for w in workers),
        }
        msgs = watch.count() - msgs0
        rollouts: dict[str, Any] = {}
        if args.rollout:
            say(workers, f"rate {args.rollout_rate}")
            rollouts = rollout_phase(args, broker.url, key, tmp)
        say(workers, "stop")
        done = [json.loads(w.stdout.readline()) for w in workers]  # type: ignore[union-attr]
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
        **(rollout_figures(args, rollouts, done) if rollouts else {}),
    }


def rollout_figures(args: argparse.Namespace, rollouts: dict[str, Any], done: list[Any]) -> dict[str, Any]:
    good, bad = rollouts["good"], rollouts["bad"]
    serving: dict[str, str] = {}
    for d in done:
        serving.update(d["serving"])
    windows_s = len(good["verdicts"]) * args.rollout_window
    sent = good["messages"]["sent_total"] + bad["messages"]["sent_total"]
    answers = good["messages"]["answers"] + bad["messages"]["answers"]
    return {
        "rollout": {
            "config": {
                "window_s": args.rollout_window,
                "canary": args.rollout_canary,
                "batch": args.rollout_batch,
                "min_inputs": args.rollout_min_inputs,
                "min_agreement": args.rollout_min_agreement,
                "rate_per_device": args.rollout_rate,
            },
            "exit": good["exit"],
            "devices": good["devices"],
            "batches": good["batches"],
            "wall_s": good["wall_s"],
            "driver_s": good["seconds"],
            "windows_checked": len(good["verdicts"]),
            "windows_s": windows_s,
            "beyond_windows_s": round(good["wall_s"] - windows_s, 3),
            "target_beyond_windows_s": ROLLOUT_TARGET_S,
            "messages": good["messages"],
            "serving_new_sha256": sum(v == rollouts["good_sha256"] for v in serving.values()),
            "agreement_per_batch": [v["figures"]["agreement"] for v in good["verdicts"]],
        },
        "rollout_rejected": {
            "exit": bad["exit"],
            "reason": bad["reason"],
            "wall_s": bad["wall_s"],
            "devices": bad["devices"],
            "messages": bad["messages"],
        },
        "model_set_sent": sent,
        "model_set_answered_to_cli": answers,
        "model_set_answered_by_devices": sum(d["model_set_answers"] for d in done),
        "model_set_lost": sent - answers,
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
    p.add_argument("--update-key", help=argparse.SUPPRESS)
    p.add_argument("--until-stop", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-rollout", dest="rollout", action="store_false", help="skip the rollout phase")
    p.add_argument("--rollout-window", type=float, default=2.0, help="edge-fleet rollout --window (s)")
    p.add_argument("--rollout-canary", type=int, default=5)
    p.add_argument("--rollout-batch", type=int, default=50)
    p.add_argument("--rollout-min-inputs", type=int, default=5)
    p.add_argument("--rollout-min-agreement", type=float, default=0.8)
    p.add_argument(
        "--rollout-rate", type=float, default=1.0, help="predictions/s per device during the rollouts"
    )
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
    if args.rollout:
        ro = res["rollout"]
        ok = ok and ro["exit"] == 0 and ro["serving_new_sha256"] == args.devices
        ok = ok and res["rollout_rejected"]["exit"] == 3 and res["model_set_lost"] == 0
        ok = ok and ro["beyond_windows_s"] <= ROLLOUT_TARGET_S
        print(
            f"rollout to {args.devices}: {ro['wall_s']:.1f} s ({ro['windows_s']:.0f} s of windows, "
            f"{ro['beyond_windows_s']:.1f} s beyond: target {ROLLOUT_TARGET_S:.0f}), "
            f"{ro['messages']['sent_total']} model/set messages, {ro['serving_new_sha256']} serving the new "
            f"model; other-task model: exit {res['rollout_rejected']['exit']}; "
            f"{res['model_set_lost']} model/set messages unanswered",
            file=sys.stderr,
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
