"""Security benchmark: fuzzing with a fixed budget, update refusals, rollback time, RSS growth.

    python benchmarks/security_bench.py                 # full budget (~2-4 min on 2 cores)
    python benchmarks/security_bench.py --quick         # smaller budget, for a smoke run
    python benchmarks/security_bench.py --write-reference

Reports (and writes to benchmarks/reference/security_bench.json with --write-reference):

1. mutated .tflite files (truncations, bit flips, word splats, huge dimensions of the Coral models)
   through the guarded loader: static checks in this process first, a child process only for the
   mutants that pass them; verdicts by stage, runtime crashes contained, and crashes of this process
   (target 0 over >= 1,000 mutants: a crash would end the script);
2. through a RUNNING agent: mutated images and decompression bombs on ``infer``, mutated JSON commands
   on ``cmd``, mutated and unsigned updates on ``model/set``; the agent must stay alive (target 0
   crashes) and still answer a ping and a valid inference afterwards;
3. updates refused, by reason;
4. time from a failed health check to the previous model serving again (target <= 10 s): an update
   that passes the guard but cannot run in the agent's pipeline (a non-image model) is activated,
   fails, and the previous model is reloaded; also the end-to-end push -> refusal time;
5. RSS growth over 100,000 inferences of a tiny model through the agent's pipeline (target <= 5 MB).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.model.guard import GuardChild, GuardLimits, Verdict, guard_many  # noqa: E402
from tests.support import DATA, fuzz  # noqa: E402
from tests.support.agent import agent_command  # noqa: E402

REFERENCE = ROOT / "benchmarks" / "reference" / "security_bench.json"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p)
    e["PYTHONUNBUFFERED"] = "1"
    return e


# --- tiny models (host side: TensorFlow in a child process, never in edge/) ----------------------------------
TINY_SCRIPT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
out = sys.argv[1]
def conv(model, name):
    open(os.path.join(out, name), "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
i = tf.keras.Input((8, 8, 1), batch_size=1)
conv(tf.keras.Model(i, tf.keras.layers.Dense(4, activation="softmax")(tf.keras.layers.Flatten()(i))),
     "tiny_image.tflite")
i = tf.keras.Input((10,), batch_size=1)
conv(tf.keras.Model(i, tf.keras.layers.Dense(3)(i)), "tiny_vector.tflite")
"""


def tiny_models(workdir: Path) -> dict[str, Path]:
    r = subprocess.run(
        [sys.executable, "-c", TINY_SCRIPT, str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
    )
    out = {name: workdir / f"{name}.tflite" for name in ("tiny_image", "tiny_vector")}
    if r.returncode != 0 or not all(p.exists() for p in out.values()):
        print(f"  (tiny models not built: {r.stderr.strip().splitlines()[-1:]}; using the Coral LSTM)")
        return {}
    return out


# --- 1. model mutants through the guard ----------------------------------------------------------------------
def bench_guard(n: int, seed: int, extra_seeds: list[Path], bypass_n: int = 300) -> dict[str, Any]:
    rng = random.Random(seed)
    seeds = (
        [DATA / "keras_lstm_mnist_ptq.tflite"] * 5
        + [DATA / "mobilenet_v1_0.25_128_quant.tflite"] * 2
        + [DATA / "model_invoking_error.tflite"]
        + extra_seeds * 2
    )
    blobs = {p: p.read_bytes() for p in set(seeds)}
    mutants, kinds = [], []
    for _ in range(n):
        kind, data = fuzz.mutate_model(blobs[rng.choice(seeds)], rng)
        mutants.append(data)
        kinds.append(kind)
    started = time.perf_counter()
    by_stage: collections.Counter[str] = collections.Counter()
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    crashes = []
    for i, verdict in guard_many(mutants, GuardLimits(timeout_s=20, cpu_s=10, memory_mb=1024), workers=2):
        by_stage[verdict.stage] += 1
        by_kind[kinds[i]]["accepted" if verdict.ok else "refused"] += 1
        if verdict.stage in ("crash", "timeout"):
            crashes.append(verdict.reason[:120])
    elapsed = time.perf_counter() - started
    static = sum(by_stage[s] for s in ("size", "identifier", "structure"))
    # Defence in depth: the same kind of mutants straight into the child, static checks bypassed,
    # shows what the child process absorbs when a malformed model slips past the structural checks.
    bypass: collections.Counter[str] = collections.Counter()
    passed = Verdict(True, "structure", "", "", "", 0)
    lstm = blobs[DATA / "keras_lstm_mnist_ptq.tflite"]
    with GuardChild(GuardLimits(timeout_s=20, cpu_s=10)) as child:
        for _ in range(bypass_n):
            bypass[child.check(fuzz.mutate_model(lstm, rng)[1], static=passed).stage] += 1
    return {
        "mutants": n,
        "seconds": round(elapsed, 1),
        "per_second": round(n / elapsed, 1),
        "refused_static": static,
        "checked_in_child": n - static,
        "verdicts_by_stage": dict(sorted(by_stage.items())),
        "by_mutator": {k: dict(v) for k, v in by_kind.items()},
        "runtime_crashes_contained": len(crashes),
        "crash_examples": sorted(set(crashes))[:5],
        "parent_crashes": 0,  # this line only runs if the benchmark process survived every mutant
        "static_checks_bypassed": {
            "mutants": bypass_n,
            "verdicts_by_stage": dict(sorted(bypass.items())),
            "runtime_crashes_contained": bypass["crash"] + bypass["timeout"],
        },
    }


# --- 2-4. a running agent ---------------------------------------------------------------------------------------
class Watch:
    def __init__(self, host: str, port: int, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt

        self.msgs: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        self.c.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.c.on_message = self._on
        self.c.max_queued_messages_set(0)
        self.c.connect(host, port)
        self.c.loop_start()
        time.sleep(0.5)

    def _on(self, _c: Any, _u: Any, m: Any) -> None:
        with self.cond:
            self.msgs.append((m.topic, bytes(m.payload)))
            self.cond.notify_all()

    def json(self, topic: str) -> list[dict[str, Any]]:
        with self.cond:
            out = []
            for t, p in self.msgs:
                if t == topic:
                    try:
                        out.append(json.loads(p))
                    except ValueError:
                        pass
            return out

    def wait(self, pred: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v or time.monotonic() > deadline:
                    return v
                self.cond.wait(0.2)

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(30)


def bench_agent(args: argparse.Namespace, tiny: dict[str, Path], work: Path) -> dict[str, Any]:
    from edge.digest import sha256_file
    from edge.ota.keys import generate_keypair, load_private_key
    from edge.ota.manifest import build_message, frame, read_header
    from tests.support.broker import Mosquitto

    rng = random.Random(args.seed + 1)
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    priv, pub, _ = generate_keypair(work / "keys" / "k.key")
    other, _, _ = generate_keypair(work / "keys" / "other.key")
    signer, stranger = load_private_key(priv), load_private_key(other)
    dev = "bench"
    t = f"edge/{dev}"
    lstm = DATA / "keras_lstm_mnist_ptq.tflite"
    lstm_sha = sha256_file(lstm)
    log = open(work / "agent.log", "wb")
    agent = subprocess.Popen(
        agent_command(
            broker,
            dev,
            work / "state",
            "--model",
            lstm,
            "--source",
            "mqtt",
            "--update-key",
            str(pub),
            "--metrics-interval",
            "0",
            "--log-level",
            "WARNING",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(),
        cwd=ROOT,
    )
    w = Watch(broker.host, broker.port, [f"{t}/#"])
    out: dict[str, Any] = {}
    try:
        assert w.wait(lambda: w.json(f"{t}/status"), 60), "agent never published its status"

        # Images: mutated BMP/JPEG/PNG and decompression bombs.
        images = [
            (DATA / "cat.bmp").read_bytes(),
            (DATA / "hot_dog.jpg").read_bytes(),
            (DATA / "mnist_nine.bmp").read_bytes(),
        ]
        started = time.perf_counter()
        for i in range(args.images):
            data = fuzz.png_bomb() if i % 25 == 0 else fuzz.mutate_image(rng.choice(images), rng)
            w.pub(f"{t}/infer/img-{i}", data)
        answered = w.wait(
            lambda: (
                len(
                    {
                        p.get("source")
                        for p in w.json(f"{t}/predictions") + w.json(f"{t}/errors")
                        if str(p.get("source", "")).startswith("img-")
                    }
                )
                >= args.images
            ),
            300,
        )
        sources = {p.get("source") for p in w.json(f"{t}/predictions") + w.json(f"{t}/errors")}
        out["images"] = {
            "sent": args.images,
            "decompression_bombs": (args.images + 24) // 25,
            "answered": len([s for s in sources if str(s).startswith("img-")]),
            "errors": len([e for e in w.json(f"{t}/errors") if str(e.get("source")).startswith("img-")]),
            "bombs_refused": len(
                [
                    e
                    for e in w.json(f"{t}/errors")
                    if "pixels" in e.get("error", "") or "bomb" in e.get("error", "")
                ]
            ),
            "seconds": round(time.perf_counter() - started, 1),
            "all_answered": bool(answered),
        }

        # Commands: malformed JSON of every kind.
        started = time.perf_counter()
        for _ in range(args.commands):
            w.pub(f"{t}/cmd", fuzz.mutate_command(rng))
        w.pub(f"{t}/cmd", json.dumps({"id": "after-fuzz", "action": "ping"}).encode())
        pong = w.wait(lambda: [r for r in w.json(f"{t}/cmd/result") if r.get("id") == "after-fuzz"], 120)
        results = w.json(f"{t}/cmd/result")
        out["commands"] = {
            "sent": args.commands,
            "results": len(results) - 1,
            "ok": sum(1 for r in results if r.get("ok")) - 1,
            "ping_after_fuzz": bool(pong and pong[0]["ok"]),
            "seconds": round(time.perf_counter() - started, 1),
        }

        # Updates: the canonical bad ones, then signed mutants (they reach the guard) and random bytes.
        model = (DATA / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
        good = build_message(model, signer, version="g", device=dev, cmd_id="tmpl")
        header, _ = read_header(good)
        sent_ids: list[str] = []
        base = len(w.json(f"{t}/cmd/result"))  # the command fuzz above also produced results

        def update_answers() -> list[dict[str, Any]]:
            return [r for r in w.json(f"{t}/cmd/result")[base:] if r.get("action") == "model/set"]

        def send(payload: bytes) -> None:
            h, _ = read_header(payload)
            sent_ids.append(h["id"])
            w.pub(f"{t}/model/set", payload)

        def cid() -> str:
            return uuid.uuid4().hex[:10]

        send(frame({**header, "id": cid(), "signature": None}, model))
        send(build_message(model, stranger, version="x", device=dev, cmd_id=cid()))
        bad = bytearray(frame({**header, "id": cid()}, model))
        bad[-100] ^= 1
        send(bytes(bad))
        send(frame({**header, "id": cid()}, model)[:-1000])
        send(frame({**header, "id": cid(), "manifest": {**header["manifest"], "version": "evil"}}, model))
        send(build_message(model, signer, version="y", device="someone-else", cmd_id=cid()))
        big = build_message(
            b"TFL3" * (66 * 1024 * 1024 // 4), signer, version="huge", device=dev, cmd_id=cid()
        )
        send(big)
        seeds = [lstm.read_bytes(), model, (DATA / "model_invoking_error.tflite").read_bytes()]
        for _ in range(args.updates):
            _, mutant = fuzz.mutate_model(rng.choice(seeds), rng)
            send(build_message(mutant, signer, version="m", device=dev, cmd_id=cid()))
        for _ in range(10):
            w.pub(f"{t}/model/set", bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
        done = w.wait(
            lambda: (
                {r.get("id") for r in update_answers()} >= set(sent_ids)
                and len(update_answers()) >= len(sent_ids) + 10
            ),
            600,
        )
        answers = update_answers()
        # Signed mutants that pass every check are installed (they are validly signed, and they run):
        # put the original model back with a good update before the last checks.
        rid = cid()
        w.pub(
            f"{t}/model/set", build_message(lstm.read_bytes(), signer, version="orig", device=dev, cmd_id=rid)
        )
        back = w.wait(lambda: [r for r in w.json(f"{t}/cmd/result") if r.get("id") == rid], 120)
        assert back and back[0]["ok"], back
        reasons = collections.Counter(
            r.get("reason", "installed") if not r.get("ok") else "installed" for r in answers
        )
        out["updates"] = {
            "sent": len(sent_ids) + 10,
            "answered": len(answers),
            "all_answered": bool(done),
            "refused_by_reason": dict(sorted(reasons.items())),
        }

        # Rollback: an update that passes the guard but cannot run in the pipeline (non-image model).
        if "tiny_vector" in tiny:
            rid = cid()
            t0 = time.perf_counter()
            w.pub(
                f"{t}/model/set",
                build_message(
                    tiny["tiny_vector"].read_bytes(), signer, version="vec", device=dev, cmd_id=rid
                ),
            )
            ans = w.wait(lambda: [r for r in w.json(f"{t}/cmd/result") if r.get("id") == rid], 120)
            push_to_answer = time.perf_counter() - t0
            r = ans[0] if ans else {}
            timings = (r.get("result") or {}).get("timings_ms", {})
            out["rollback"] = {
                "reason": r.get("reason"),
                "rolled_back": (r.get("result") or {}).get("rolled_back"),
                "failed_check_to_previous_serving_s": round(timings.get("rollback", -1) / 1000, 3),
                "push_to_answer_s": round(push_to_answer, 2),
                "error": r.get("error", "")[:200],
            }
        rid = cid()
        t0 = time.perf_counter()
        w.pub(
            f"{t}/model/set",
            build_message(
                (DATA / "model_invoking_error.tflite").read_bytes(),
                signer,
                version="bad",
                device=dev,
                cmd_id=rid,
            ),
        )
        ans = w.wait(lambda: [r for r in w.json(f"{t}/cmd/result") if r.get("id") == rid], 120)
        out["guard_refusal"] = {
            "reason": ans[0].get("reason") if ans else None,
            "push_to_answer_s": round(time.perf_counter() - t0, 2),
            "previous_model_interrupted_s": 0.0,
        }

        # Still alive, still serving the original model?
        w.pub(f"{t}/infer/final", (DATA / "mnist_nine.bmp").read_bytes())
        final = w.wait(lambda: [p for p in w.json(f"{t}/predictions") if p.get("source") == "final"], 60)
        out["agent"] = {
            "alive": agent.poll() is None,
            "crashes": 0 if agent.poll() is None else 1,
            "final_prediction_ok": bool(final and final[0]["top_k"][0]["index"] == 9),
            "still_on_original_model": bool(final and final[0]["model_sha256"] == lstm_sha),
            "audit_records": len(w.json(f"{t}/audit")),
        }
    finally:
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        w.c.loop_stop()
        broker.stop()
        log.close()
    return out


# --- 5. RSS over many inferences -----------------------------------------------------------------------------------
def bench_rss(n: int, tiny: dict[str, Path]) -> dict[str, Any]:
    from edge.inference.pipeline import Pipeline, Settings
    from edge.inference.preprocess import Normalization, decode_image
    from edge.model.runtime import load_model

    path = tiny.get("tiny_image", DATA / "keras_lstm_mnist_ptq.tflite")
    model = load_model(path)
    pipe = Pipeline(model, {}, Normalization(), Settings(top_k=3))
    img = decode_image(DATA / "mnist_nine.bmp")
    for _ in range(2000):  # warm-up: allocator pools, lazy imports
        pipe.run(img)
    before = rss_bytes()
    started = time.perf_counter()
    samples = []
    for i in range(n):
        pipe.run(img)
        if i % (n // 10) == 0:
            samples.append(rss_bytes())
    elapsed = time.perf_counter() - started
    after = rss_bytes()
    return {
        "model": path.name,
        "inferences": n,
        "seconds": round(elapsed, 1),
        "rss_before_mb": round(before / 2**20, 2),
        "rss_after_mb": round(after / 2**20, 2),
        "rss_growth_mb": round((after - before) / 2**20, 3),
        "rss_samples_mb": [round(s / 2**20, 2) for s in samples],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mutants", type=int, default=1200)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--commands", type=int, default=500)
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--inferences", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=20261129)
    p.add_argument("--quick", action="store_true", help="small budget (smoke run)")
    p.add_argument("--write-reference", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.mutants, args.images, args.commands, args.updates, args.inferences = 200, 50, 100, 10, 10_000
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "args": {k: v for k, v in vars(args).items() if k != "write_reference"},
    }
    with tempfile.TemporaryDirectory(prefix="edge-security-bench-") as tmp:
        work = Path(tmp)
        print("building tiny models (TensorFlow, host side)...", flush=True)
        tiny = tiny_models(work)
        print(f"1. {args.mutants} model mutants through the guarded loader...", flush=True)
        report["guard_fuzz"] = g = bench_guard(args.mutants, args.seed, [tiny["tiny_image"]] if tiny else [])
        print(
            f"   {g['mutants']} mutants in {g['seconds']} s ({g['per_second']}/s): {g['refused_static']} refused "
            f"by the static checks, {g['checked_in_child']} loaded in a child; runtime crashes contained: "
            f"{g['runtime_crashes_contained']}; crashes of this process: {g['parent_crashes']}"
        )
        print(f"   verdicts by stage: {g['verdicts_by_stage']}")
        b = g["static_checks_bypassed"]
        print(
            f"   static checks bypassed ({b['mutants']} LSTM mutants straight into the child): "
            f"{b['verdicts_by_stage']}; runtime crashes contained: {b['runtime_crashes_contained']}"
        )
        print("2-4. fuzzing a running agent (images, commands, updates), rollback...", flush=True)
        (work / "agent").mkdir()
        report["agent_fuzz"] = a = bench_agent(args, tiny, work / "agent")
        print(f"   images: {a['images']}")
        print(f"   commands: {a['commands']}")
        print(
            f"   updates refused by reason: {a['updates']['refused_by_reason']} "
            f"(all answered: {a['updates']['all_answered']})"
        )
        if "rollback" in a:
            print(
                f"   failed health check in the agent -> previous model serving: "
                f"{a['rollback']['failed_check_to_previous_serving_s']} s (target <= 10 s); "
                f"push -> answer {a['rollback']['push_to_answer_s']} s"
            )
        if "rollback" in a:
            print(f"   rollback: {a['rollback']}")
        print(f"   guard refusal: {a['guard_refusal']}")
        print(f"   agent: {a['agent']}")
        print(f"5. RSS over {args.inferences} inferences...", flush=True)
        report["rss"] = r = bench_rss(args.inferences, tiny)
        print(
            f"   {r['model']}: {r['inferences']} inferences in {r['seconds']} s, RSS {r['rss_before_mb']} -> "
            f"{r['rss_after_mb']} MB (growth {r['rss_growth_mb']} MB, target <= 5 MB)"
        )
    mutants_total = (
        g["mutants"]
        + g["static_checks_bypassed"]["mutants"]
        + a["images"]["sent"]
        + a["commands"]["sent"]
        + a["updates"]["sent"]
    )
    report["targets"] = {
        "mutants_tried": mutants_total,
        "agent_crashes": a["agent"]["crashes"] + g["parent_crashes"],
        "mutants_ge_1000": mutants_total >= 1000,
        "zero_crashes": a["agent"]["crashes"] + g["parent_crashes"] == 0,
        "rollback_le_10s": (
            "rollback" in a and 0 <= a["rollback"]["failed_check_to_previous_serving_s"] <= 10
        ),
        "rss_growth_le_5mb": r["rss_growth_mb"] <= 5.0,
    }
    print(f"targets: {report['targets']}")
    if args.write_reference:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {REFERENCE}")
    return 0 if all(v for k, v in report["targets"].items() if isinstance(v, bool)) else 1


if __name__ == "__main__":
    sys.exit(main())
