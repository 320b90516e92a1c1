"""What a shadow candidate costs the active model's predictions: p50 latency with and without one.

One real agent (``--source mqtt``) on a real mosquitto serves image requests at a low rate (``--rate``,
default 10/s, so the CPU is idle most of the time) with ``--threads 1`` (default): on a 2-core machine the
active model has one core and a core is spare, the condition of issue 15's target. Rounds alternate
(A B B A ...) between no candidate and a candidate shadowing on every input (``shadow_fraction`` 1, the
same model: the most work a shadow does per input); the candidate is started and dropped with signed
``model/set`` stage messages between rounds, in the same agent process. The machine is shared and noisy,
so each round's p50 is taken and the figure is the ratio of the medians of those p50s (with / without),
for the request -> prediction time (what a subscriber sees) and for the agent's own ``latency_ms.total``.

Target: ratio of p50 request -> prediction <= 1.05 (the shadow model costs the active path <= 5 %).

    python benchmarks/shadow_cost.py [--rounds 6] [--per-round 30] [--rate 10] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

from benchmarks._report import mqtt_environment, write_result  # noqa: E402
from benchmarks.request_latency import DEVICE, Requester  # noqa: E402
from edge.ota.keys import generate_keypair, load_private_key  # noqa: E402
from edge.ota.manifest import build_message, build_stage_message  # noqa: E402
from tests.support import DATA  # noqa: E402
from tests.support.agent import agent_command  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

MODEL = "mobilenet_v1_0.25_128_quant.tflite"
IMAGE = "hot_dog.jpg"
TARGET = 1.05
T = f"edge/{DEVICE}"


class Control:
    """Sends signed stage messages and collects their answers and the shadow windows."""

    def __init__(self, broker: Mosquitto) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.windows: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        c = self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="shadow-ctl")
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.subscribe([(f"{T}/cmd/result", 1), (f"{T}/shadow", 1)])
        c.loop_start()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        with self.cond:
            if msg.topic.endswith("/shadow"):
                self.windows.append(data)
            elif isinstance(data.get("id"), str):
                self.answers[data["id"]] = data
            self.cond.notify_all()

    def send(self, payload: bytes, cid: str) -> dict[str, Any]:
        self.client.publish(f"{T}/model/set", payload, qos=1)
        with self.cond:
            if not self.cond.wait_for(lambda: cid in self.answers, 60):
                raise SystemExit(f"no answer to {cid}")
            answer = self.answers[cid]
        if not answer["ok"]:
            raise SystemExit(f"{cid} refused: {answer}")
        return answer

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _p50s(req: Requester, names: list[str]) -> tuple[float, float]:
    pred = [(req.predicted[n] - req.sent[n]) * 1000 for n in names if n in req.predicted]
    agent = [req.agent_ms[n] for n in names if n in req.agent_ms]
    if len(pred) < len(names):
        raise SystemExit(f"only {len(pred)}/{len(names)} predictions arrived")
    return statistics.median(pred), statistics.median(agent)


def run(args: argparse.Namespace) -> dict[str, Any]:
    image = (DATA / IMAGE).read_bytes()
    model = (DATA / MODEL).read_bytes()
    with (
        tempfile.TemporaryDirectory(prefix="edge-shadow-") as tmp,
        Mosquitto(workdir=Path(tmp), extra_conf="set_tcp_nodelay true") as broker,
    ):
        priv, pub, _ = generate_keypair(Path(tmp) / "keys" / "update.key")
        key = load_private_key(priv)
        req, ctl = Requester(broker, nodelay=True), Control(broker)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        log = open(Path(tmp) / "agent.log", "wb")  # noqa: SIM115 - closed below
        agent = subprocess.Popen(
            agent_command(
                broker,
                DEVICE,
                Path(tmp) / "state",
                "--model",
                DATA / MODEL,
                "--source",
                "mqtt",
                "--metrics-interval",
                "0",
                "--update-key",
                pub,
                "--threads",
                str(args.threads),
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        rounds: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
        try:
            if not req.online.wait(60):
                raise SystemExit("agent not online:\n" + (Path(tmp) / "agent.log").read_text()[-3000:])
            for i in range(5):  # warm-up: first decode and invoke
                req.request(f"warmup-{i}", image)
                time.sleep(1 / args.rate)
            time.sleep(1.0)
            sha = hashlib.sha256(model).hexdigest()
            for r in range(args.rounds):
                order = ("without", "with") if r % 2 == 0 else ("with", "without")  # A B B A: drift cancels
                for cond in order:
                    if cond == "with":
                        cid = uuid.uuid4().hex[:8]
                        msg = build_message(
                            model,
                            key,
                            version="same",
                            device=DEVICE,
                            cmd_id=cid,
                            stage="shadow",
                            shadow_window_s=1.0,
                        )
                        ctl.send(msg, cid)
                        time.sleep(0.5)
                    names = [f"{cond}-{r}-{i:04d}" for i in range(args.per_round)]
                    start = time.perf_counter()
                    for i, name in enumerate(names):
                        time.sleep(max(0.0, start + i / args.rate - time.perf_counter()))
                        req.request(name, image)
                    deadline = time.monotonic() + 30
                    while any(n not in req.predicted for n in names) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    pred, own = _p50s(req, names)
                    rounds[cond].append({"request_to_prediction_p50_ms": pred, "agent_total_p50_ms": own})
                    if cond == "with":
                        time.sleep(1.2)  # the last window out
                        cid = uuid.uuid4().hex[:8]
                        stage = build_stage_message(
                            key,
                            stage="drop",
                            sha256=sha,
                            size=len(model),
                            version="same",
                            device=DEVICE,
                            cmd_id=cid,
                        )
                        ctl.send(stage, cid)
                    print(
                        f"round {r} {cond:7s}: request -> prediction p50 {pred:.2f} ms, agent {own:.2f} ms",
                        flush=True,
                    )
        finally:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
            log.close()
            req.close()
            ctl.close()
    compared = sum(w["inputs"] for w in ctl.windows)
    skipped = sum(w["skipped"] for w in ctl.windows)
    agreements = [w["agreement"] for w in ctl.windows if w["agreement"] is not None]

    def ratio(key: str) -> float:
        return statistics.median(x[key] for x in rounds["with"]) / statistics.median(
            x[key] for x in rounds["without"]
        )

    return {
        "rounds": {k: [{kk: round(vv, 3) for kk, vv in x.items()} for x in v] for k, v in rounds.items()},
        "median_p50_ms": {
            cond: {
                key: round(statistics.median(x[key] for x in rounds[cond]), 3)
                for key in ("request_to_prediction_p50_ms", "agent_total_p50_ms")
            }
            for cond in rounds
        },
        "ratio_request_to_prediction": round(ratio("request_to_prediction_p50_ms"), 4),
        "ratio_agent_total": round(ratio("agent_total_p50_ms"), 4),
        "shadow": {
            "compared": compared,
            "skipped": skipped,
            "windows": len(ctl.windows),
            "min_agreement": min(agreements) if agreements else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each condition (alternating)")
    ap.add_argument("--per-round", type=int, default=30, help="requests per round")
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second")
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads of the active model")
    ap.add_argument("--json", type=Path, help="write the results there (e.g. benchmarks/reference/...)")
    args = ap.parse_args(argv)
    r = run(args)
    ok = r["ratio_request_to_prediction"] <= TARGET
    print(
        f"p50 request -> prediction: without {r['median_p50_ms']['without']['request_to_prediction_p50_ms']:.2f} ms, "
        f"with a shadow {r['median_p50_ms']['with']['request_to_prediction_p50_ms']:.2f} ms: "
        f"ratio {r['ratio_request_to_prediction']:.3f}; agent's own total: ratio {r['ratio_agent_total']:.3f}; "
        f"shadow compared {r['shadow']['compared']} inputs, skipped {r['shadow']['skipped']}, "
        f"min window agreement {r['shadow']['min_agreement']}"
    )
    print(f"target ratio <= {TARGET}: {'PASS' if ok else 'FAIL'}")
    write_result(
        args.json,
        {
            "benchmark": "shadow_cost",
            "description": "active-path p50 latency with / without a shadow candidate (same model), "
            "real agent and mosquitto, low request rate, interleaved rounds, ratio of medians",
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": MODEL,
            "image": IMAGE,
            "rate_per_s": args.rate,
            "per_round": args.per_round,
            "threads": args.threads,
            "target": f"ratio of p50 request->prediction <= {TARGET}",
            "meets_target": ok,
            **r,
            "environment": mqtt_environment(),
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
