"""edge-agent overhead, measured in one run against a bare runtime on the same model.

    /work/venv/bin/python benchmarks/agent_bench.py [--images 40] [--cycles 30] [--out benchmarks/reference/agent_x86_64.json]

Model: MobileNetV2 (alpha 1.0, 224x224, float32, random weights) built with TensorFlow here
(~6-9 ms per invoke with one thread on this machine: the "~10 ms model" of the target), cached in
--workdir. The agent (``python -m edge run``, a directory source, a real mosquitto, a subscriber) and
a bare loop process run with --threads 1; both stay up, each idle while the other works.

Method: --cycles times, a bare block of --images invokes, then a burst of --images model-sized BMP
files renamed into the agent's directory at once; a last bare block closes the run. A burst's time
per inference is the span between its predictions' ``ts`` (after --skip warm-up ones) over their
count; its ratio divides it by the mean of the two bare blocks around it (each block's wall time
over its invokes). This machine is shared and its speed drifts by tens of percent within seconds
(a bare loop alone swings 5.8-11 ms per 50 invokes): short, interleaved blocks put both sides of a
ratio in the same conditions, and the median over bursts discards the bursts a drift split.

Figures (each a ratio of two numbers measured in this run):
  1. agent steady-state time per inference (decode, preprocess, invoke, postprocess, JSON, spool,
     publish, done record) vs a bare ``interpreter.invoke()`` loop, median of bursts  target <= 1.05x
     (also shown: quartiles, the pooled ratio of all bursts, and the agent's own inference stage vs
     the bare loop, i.e. no slowdown of invoke itself)
  2. agent RSS after the bursts vs the bare runtime process holding the same model     target <= 1.3x
  3. agent start (process spawn) to the first prediction received by a subscriber     target <= 1.5 s
Publish capacity at QoS 1 is measured by benchmarks/publish_capacity.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import DATA  # noqa: E402
from tests.support.agent import agent_command  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

TARGETS = {"time_ratio": 1.05, "rss_ratio": 1.3, "first_prediction_s": 1.5}
TARGETS_INT8 = {"time_ratio_1_thread": 1.10, "throughput_ratio_default_threads": 0.85}

BARE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    model, tensor, threads = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])
    # model_content, as edge.model.runtime.load_model does (it hashes and checks the bytes it loads)
    it = Interpreter(model_content=open(model, "rb").read(), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], tensor)  # the agent's own preprocessed image: same data, same work
    for _ in range(10):
        it.invoke()
    print("ready", flush=True)
    for line in sys.stdin:  # one block of n invokes per line: the process stays up between blocks
        n = int(line)
        times = []
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            t = time.perf_counter()
            it.invoke()
            times.append((time.perf_counter() - t) * 1e3)
        wall = (time.perf_counter() - start) * 1e3 / n
        cpu = (time.process_time() - cpu) * 1e3 / n
        rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
        print(json.dumps({"per_inference_ms": wall, "median_ms": sorted(times)[n // 2], "cpu_ms": cpu, "rss_mb": rss}), flush=True)
""")


class BareLoop:
    """A bare runtime process kept up between blocks, so a block starts the moment it is asked for."""

    def __init__(self, model: Path, tensor: Path, threads: int = 1) -> None:
        self.threads = threads
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BARE, str(model), str(tensor), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the bare loop process did not start")

    def block(self, n: int) -> dict:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def build_model(workdir: Path) -> Path:
    path = workdir / "mobilenet_v2_1.0_224_float.tflite"
    if path.exists():
        return path
    print("building MobileNetV2 1.0 224 (random weights) with TensorFlow ...", flush=True)
    code = textwrap.dedent(f"""
        import tensorflow as tf
        m = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
        open({str(path)!r}, "wb").write(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def build_int8_model(workdir: Path) -> Path:
    """The same MobileNetV2, fully int8-quantized (int8 input and output), calibrated on random images."""
    path = workdir / "mobilenet_v2_1.0_224_int8.tflite"
    if path.exists():
        return path
    print("building MobileNetV2 1.0 224 int8 (random weights) with TensorFlow ...", flush=True)
    code = textwrap.dedent(f"""
        import numpy as np
        import tensorflow as tf
        m = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
        rng = np.random.default_rng(0)
        def calibration():
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)]
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = calibration
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
        open({str(path)!r}, "wb").write(c.convert())
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


PHOTOS = ("hot_dog.jpg", "cat.bmp", "squat.bmp", "bird_segmentation.bmp")  # the real photos we have
PHOTO_SIZES = ((640, 480), (1280, 960), (2016, 1512), (4032, 3024))  # VGA to a 12 Mpx phone


def make_photos(
    d: Path, n: int, cache: Path, sizes_wanted: tuple[tuple[int, int], ...] = PHOTO_SIZES
) -> list[str]:
    """n JPEG photos (quality 90), cycling through the real photos at each size: each photo is cropped to
    4:3 and resized (upscaled past its own size: smoother than a real 12 Mpx photo, so if anything
    cheaper to decode). Returns the sizes, in file order."""
    from PIL import Image

    cache.mkdir(parents=True, exist_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(n):
        photo, (w, h) = PHOTOS[i % len(PHOTOS)], sizes_wanted[(i // len(PHOTOS)) % len(sizes_wanted)]
        made = cache / f"{Path(photo).stem}_{w}x{h}.jpg"
        if not made.exists():
            img = Image.open(DATA / photo).convert("RGB")
            cw, ch = min(img.width, img.height * 4 // 3), min(img.height, img.width * 3 // 4)
            box = (
                (img.width - cw) // 2,
                (img.height - ch) // 2,
                (img.width + cw) // 2,
                (img.height + ch) // 2,
            )
            img.crop(box).resize((w, h), Image.Resampling.BICUBIC).save(made, "JPEG", quality=90)
        os.link(made, d / f"img_{i:04d}.jpg")
        sizes.append(f"{w}x{h}")
    return sizes


def make_images(d: Path, n: int) -> None:
    from PIL import Image

    img = Image.open(DATA / "cat.bmp").convert("RGB").resize((224, 224))
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img.save(d / f"img_{i:04d}.bmp")


def input_tensor_path(model: Path) -> Path:
    return model.parent / f"{model.stem}_input.npy"


def input_tensor(model: Path, workdir: Path) -> Path:
    """The cat image as the agent feeds it (edge.inference.preprocess), saved for the bare loop."""
    import numpy as np

    from edge.inference.preprocess import decode_image, image_to_tensor
    from edge.model.runtime import load_model

    m = load_model(model, threads=1)
    path = input_tensor_path(model)
    np.save(path, image_to_tensor(decode_image(DATA / "cat.bmp").resize((224, 224)), m.inputs[0]))
    return path


def rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def cpu_ms(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e3 / os.sysconf("SC_CLK_TCK")


def decode_floor(spec: Any, pool: Path, sizes: list[str]) -> tuple[dict[str, list[float]], float]:
    """Decode + preprocess of every photo of the burst, one at a time on one thread (the agent's own
    functions, as its decode threads call them: DCT-scaled JPEG decode, resize, int8): wall ms per photo by size,
    and the thread's CPU ms per photo over the burst. Entropy decoding reads the whole file at any DCT
    scale, so no scheduling gets below this."""
    from edge.inference.preprocess import decode_image, image_layout, image_to_tensor

    layout = image_layout(spec)
    out: dict[str, list[float]] = {}
    cpu = time.thread_time()
    for f, size in zip(sorted(pool.iterdir()), sizes):
        raw = f.read_bytes()
        t = time.perf_counter()
        image_to_tensor(decode_image(raw, fit=(layout.width, layout.height)), spec)
        out.setdefault(size, []).append((time.perf_counter() - t) * 1e3)
    return out, (time.thread_time() - cpu) * 1e3 / len(sizes)


def _ts(p: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(p["ts"].replace("Z", "+00:00")).timestamp()


def agent_run(
    model: Path,
    workdir: Path,
    n: int,
    cycles: int,
    skip: int,
    *,
    photos: tuple[tuple[int, int], ...] = (),
    threads: int | None = 1,
    bare_threads: tuple[int, ...] = (1,),
) -> dict:
    """Agent and bare loops up side by side (each idle while the others work); then ``cycles`` x
    (a bare block of n invokes per bare thread count, agent burst of n images), then last bare blocks.

    Each burst sits between two bare blocks a fraction of a second away: this machine is shared and
    its speed drifts by tens of percent within seconds, and a drift then hits both sides of a ratio.
    ``photos``: the burst is JPEG photos of these sizes (make_photos), else model-sized BMPs;
    ``threads``: the agent's --threads (None: the agent's default).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.model.runtime import load_model

    broker = Mosquitto(workdir=Path(tempfile.mkdtemp(prefix="mosq-", dir=workdir))).start()
    got: list[tuple[float, bytes]] = []
    cond = threading.Condition()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c, _u, msg) -> None:
        with cond:  # parsed after the burst: the subscriber shares the agent's CPUs
            got.append((time.perf_counter(), bytes(msg.payload)))
            cond.notify_all()

    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_connect = lambda c, *a: c.subscribe("edge/bench/predictions", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    subscribed.wait(10)

    src = Path(tempfile.mkdtemp(prefix="src-", dir=workdir))
    make_images(src, 1)
    state = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
    pool = Path(tempfile.mkdtemp(prefix="pool-", dir=workdir))
    if photos:
        sizes = make_photos(pool, n, workdir / "photos", photos)
    else:
        make_images(pool, n)
        sizes = ["224x224"] * n
    ext = ".jpg" if photos else ".bmp"

    def wait_for(count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with cond:
            while len(got) < count:
                if not cond.wait(max(0.0, deadline - time.monotonic())):
                    raise SystemExit(f"only {len(got)} of {count} predictions arrived")

    # A 50 ms directory poll instead of the default 0.5 s, so that a burst starts right after the bare
    # block before it: it changes when a burst starts, not how fast the agent works through it.
    env = dict(os.environ, PYTHONPATH=str(ROOT), EDGE_SOURCE_POLL_INTERVAL_S="0.05")
    spawned = time.perf_counter()
    proc = subprocess.Popen(
        agent_command(
            broker,
            "bench",
            state,
            "--model",
            model,
            "--source",
            src,
            *(["--threads", str(threads)] if threads is not None else []),
            "--metrics-interval",
            "0",
            "--log-level",
            "WARNING",
        ),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = []
    spec = load_model(model, threads=1).inputs[0] if photos else None
    loops: list[BareLoop] = []
    preprocess_by_size: dict[str, list[float]] = {}
    try:
        wait_for(1, 30)
        first_s = got[0][0] - spawned
        loops = [BareLoop(model, input_tensor_path(model), k) for k in bare_threads]
        bares = {lp.threads: [lp.block(n)] for lp in loops}
        for c in range(cycles):
            start = len(got)
            cpu_before = (cpu_ms(proc.pid), cpu_ms(broker.proc.pid) if broker.proc else 0.0)
            names = []
            # n files appear at once, renamed in as a camera daemon would
            for i, f in enumerate(sorted(pool.iterdir())):
                name = f"c{c:03d}_{i:04d}{ext}"
                os.link(f, src / (name + ".part"))
                names.append(name)
            for name in names:
                os.rename(src / (name + ".part"), src / name)
            wait_for(start + n, 600)
            cpu_after = (cpu_ms(proc.pid), cpu_ms(broker.proc.pid) if broker.proc else 0.0)
            for lp in loops:
                bares[lp.threads].append(lp.block(n))
            # the decode floor next to the burst and the bare blocks: the same drift hits all three
            floor, floor_cpu = decode_floor(spec, pool, sizes) if photos else ({}, 0.0)
            everything = [json.loads(raw) for _, raw in got[start : start + n]]
            for p in everything:
                size = sizes[int(p["source"].split("_")[1][:4])]
                preprocess_by_size.setdefault(size, []).append(p["latency_ms"]["preprocess"])
            preds = everything[skip:]  # pipeline warm-up
            per = (_ts(preds[-1]) - _ts(preds[0])) * 1e3 / (len(preds) - 1)
            around = {
                k: (b[-2]["per_inference_ms"] + b[-1]["per_inference_ms"]) / 2 for k, b in bares.items()
            }
            results.append(
                {
                    "per_inference_ms": per,
                    "inference_stage_median_ms": statistics.median(
                        p["latency_ms"]["inference"] for p in preds
                    ),
                    "pipeline_total_median_ms": statistics.median(p["latency_ms"]["total"] for p in preds),
                    "bare_per_inference_ms": around[bare_threads[0]],
                    "bare_median_ms": (
                        bares[bare_threads[0]][-2]["median_ms"] + bares[bare_threads[0]][-1]["median_ms"]
                    )
                    / 2,
                    "bare_per_inference_ms_by_threads": around,
                    "bare_best_per_inference_ms": min(around.values()),
                    "agent_rss_mb": rss_of(proc.pid),
                    # every thread of the agent (decode, invoke, finish, MQTT) and of the broker, per image
                    "agent_cpu_ms_per_image": (cpu_after[0] - cpu_before[0]) / n,
                    "broker_cpu_ms_per_image": (cpu_after[1] - cpu_before[1]) / n,
                    "decode_floor_ms_by_size": {k: statistics.median(v) for k, v in floor.items()},
                    "decode_floor_ms_mean": sum(map(sum, floor.values())) / n if floor else 0.0,
                    "decode_floor_cpu_ms_mean": floor_cpu,
                    "bare_cpu_ms_by_threads": {
                        k: (b[-2]["cpu_ms"] + b[-1]["cpu_ms"]) / 2 for k, b in bares.items()
                    },
                }
            )
            for name in names:  # a camera's cleaner: keeps the directory (and each scan) small
                (src / name).unlink()
    finally:
        for lp in loops:
            lp.close()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        sub.loop_stop()
        broker.stop()
    return {
        "first_prediction_s": first_s,
        "agent_threads": threads,
        "cycles": results,
        "bare_blocks": bares[bare_threads[0]],
        "bare_blocks_by_threads": bares,
        "preprocess_ms_median_by_size": {k: statistics.median(v) for k, v in preprocess_by_size.items()},
        "exit_code": proc.returncode,
        "stderr": err[-2000:],
    }


def _quartiles(xs: list[float]) -> list[float]:
    q = statistics.quantiles(xs, n=4)
    return [q[0], q[2]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=("float-bmp", "int8-jpeg", "all"), default="all")
    ap.add_argument("--images", type=int, default=40, help="images per burst (and invokes per bare block)")
    ap.add_argument("--cycles", type=int, default=30, help="bursts, each between two bare blocks")
    ap.add_argument("--int8-cycles", type=int, default=15, help="bursts per agent run of the int8-jpeg case")
    ap.add_argument(
        "--photo-sizes",
        default=",".join(f"{w}x{h}" for w, h in PHOTO_SIZES),
        help="JPEG sizes of the int8-jpeg case, WxH,WxH,...",
    )
    ap.add_argument("--skip", type=int, default=3, help="first predictions of a burst left out (warm-up)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edge-agent-bench")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "reference" / f"agent_{platform.machine()}.json"
    )
    ap.add_argument(
        "--out-int8",
        type=Path,
        default=ROOT / "benchmarks" / "reference" / f"agent_int8_jpeg_{platform.machine()}.json",
    )
    a = ap.parse_args()
    if a.images - a.skip < 10:
        ap.error(f"--images must exceed --skip by at least 10; received {a.images} and {a.skip}")
    a.workdir.mkdir(parents=True, exist_ok=True)
    ok = True
    if a.case in ("float-bmp", "all"):
        ok = float_case(a) and ok
    if a.case in ("int8-jpeg", "all"):
        ok = int8_case(a) and ok
    return 0 if ok else 1


def int8_case(a: argparse.Namespace) -> bool:
    """Real JPEG photos (640x480 to 4032x3024) and an int8 MobileNetV2: the agent decodes every photo
    (on its prefetch thread) while the bare loop only invokes a prepared tensor.

    Agent runs, each interleaved with bare blocks at 1..cores threads: --threads 1 against the 1-thread
    bare loop (time per image); the agent's default threads (and every other count up to the cores)
    against the best of the bare loops (images/s, the higher the better).

    Next to each burst, the burst's photos are also decoded and preprocessed on one thread in this
    process (the decode floor): with the 1-thread invoke time it gives the CPU floor, (decode + invoke)
    / cores per image, which no scheduling beats. Where it exceeds the bare loop's time the targets
    cannot be met on this machine; the "vs the floor" ratios then compare the agent with
    max(bare, CPU floor) instead. --photo-sizes picks the photo mix (e.g. 640x480,1280x720 for camera
    frames, 4032x3024 for phone photos); the figures depend on it, so name the mix with the figures.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    model = build_int8_model(a.workdir)
    input_tensor(model, a.workdir)
    load_before = os.getloadavg()[0]
    every = tuple(range(1, cores + 1))
    sizes = tuple(tuple(int(v) for v in s.split("x")) for s in a.photo_sizes.split(","))
    from edge.model.runtime import default_threads

    default = default_threads()

    def run(threads: int | None) -> dict:
        return agent_run(
            model,
            a.workdir,
            a.images,
            a.int8_cycles,
            a.skip,
            photos=sizes,
            threads=threads,
            bare_threads=every,
        )

    # --threads 1, then no --threads (the agent's default), then every other count up to the cores
    runs = {"threads_1": run(1), "threads_default": run(None)}
    for k in every[1:]:
        if k != default:
            runs[f"threads_{k}"] = run(k)
    one = runs["threads_1"]["cycles"]
    time_ratios = [c["per_inference_ms"] / c["bare_per_inference_ms"] for c in one]

    def throughput(run: dict) -> list[float]:  # agent images/s over the best bare images/s
        return [c["bare_best_per_inference_ms"] / c["per_inference_ms"] for c in run["cycles"]]

    dflt = throughput(runs["threads_default"])

    # The floor: all the CPU work an image needs (its decode, on one thread, next to the burst, plus a
    # 1-thread invoke) spread over every core. No scheduling gets an image through faster, so when
    # decoding is the larger part the targets above cannot be met on this many cores; these bounded
    # ratios say how close the agent gets to what the machine can do.
    def cpu_floor(c: dict) -> float:
        return (c["decode_floor_ms_mean"] + c["bare_per_inference_ms_by_threads"][1]) / cores

    def bound_1(c: dict) -> float:  # best time per image with a 1-thread interpreter
        return max(c["bare_per_inference_ms_by_threads"][1], cpu_floor(c))

    def bound_best(c: dict) -> float:  # best time per image at any thread count
        return max(c["bare_best_per_inference_ms"], cpu_floor(c))

    vs_floor_1 = [c["per_inference_ms"] / bound_1(c) for c in one]
    vs_floor_dflt = [bound_best(c) / c["per_inference_ms"] for c in runs["threads_default"]["cycles"]]
    every_cycle = [c for r in runs.values() for c in r["cycles"]]
    floor_by_size: dict[str, list[float]] = {}
    for c in every_cycle:
        for k, v in c["decode_floor_ms_by_size"].items():
            floor_by_size.setdefault(k, []).append(v)
    figures = {
        "time_ratio_1_thread": statistics.median(time_ratios),
        "time_ratio_1_thread_quartiles": _quartiles(time_ratios),
        "throughput_ratio_default_threads": statistics.median(dflt),
        "throughput_ratio_default_threads_quartiles": _quartiles(dflt),
        "default_threads": default_threads(),
        "throughput_ratio_by_run": {k: statistics.median(throughput(v)) for k, v in runs.items()},
        "bare_per_inference_ms_median_by_threads": {
            k: statistics.median(
                c["bare_per_inference_ms_by_threads"][k] for r in runs.values() for c in r["cycles"]
            )
            for k in every
        },
        "agent_per_inference_ms_median_1_thread": statistics.median(c["per_inference_ms"] for c in one),
        "agent_per_inference_ms_median_default_threads": statistics.median(
            c["per_inference_ms"] for c in runs["threads_default"]["cycles"]
        ),
        "bare_per_inference_ms_median_1_thread": statistics.median(c["bare_per_inference_ms"] for c in one),
        "bare_best_per_inference_ms_median": statistics.median(
            c["bare_best_per_inference_ms"] for c in runs["threads_default"]["cycles"]
        ),
        "preprocess_ms_median_by_size": runs["threads_1"]["preprocess_ms_median_by_size"],
        "decode_floor_ms_median_by_size": {k: statistics.median(v) for k, v in floor_by_size.items()},
        "decode_floor_ms_mean_median": statistics.median(c["decode_floor_ms_mean"] for c in every_cycle),
        "cpu_floor_ms_median": statistics.median(cpu_floor(c) for c in every_cycle),
        "time_ratio_1_thread_vs_floor": statistics.median(vs_floor_1),
        "throughput_ratio_default_threads_vs_floor": statistics.median(vs_floor_dflt),
        "agent_cpu_ms_per_image_median_1_thread": statistics.median(c["agent_cpu_ms_per_image"] for c in one),
        "broker_cpu_ms_per_image_median": statistics.median(
            c["broker_cpu_ms_per_image"] for c in every_cycle
        ),
        # CPU time (not wall): what an image costs whatever else the machine runs
        "decode_floor_cpu_ms_mean_median": statistics.median(
            c["decode_floor_cpu_ms_mean"] for c in every_cycle
        ),
        "bare_cpu_ms_per_inference_median_by_threads": {
            k: statistics.median(c["bare_cpu_ms_by_threads"][k] for c in every_cycle) for k in every
        },
    }
    cpu = figures["agent_cpu_ms_per_image_median_1_thread"]
    invoke_cpu = figures["bare_cpu_ms_per_inference_median_by_threads"][1]
    decode_cpu = figures["decode_floor_cpu_ms_mean_median"]
    # the agent's own work per image beyond decoding and invoking (MQTT, JSON, spool, hand-offs)
    figures["agent_overhead_cpu_ms_per_image"] = cpu - decode_cpu - invoke_cpu
    # images per CPU-second, agent over a 1-thread bare loop: what any images/s ratio is, at best,
    # when both keep every core busy
    figures["images_per_cpu_second_ratio"] = invoke_cpu / cpu
    # The best the original targets' ratios can be with these photos, from CPU times (load-independent):
    # decoding and invoking alone, spread over every core, against a 1-thread invoke; the images/s one
    # assumes the bare loop's best uses every core (2 threads: 1.9x faster than 1 on the reference box).
    figures["time_ratio_1_thread_best_possible"] = max(1.0, (decode_cpu + invoke_cpu) / cores / invoke_cpu)
    figures["throughput_ratio_best_possible"] = min(1.0, invoke_cpu / (decode_cpu + invoke_cpu))
    passed = {
        "time_ratio_1_thread": figures["time_ratio_1_thread"] <= TARGETS_INT8["time_ratio_1_thread"],
        "throughput_ratio_default_threads": figures["throughput_ratio_default_threads"]
        >= TARGETS_INT8["throughput_ratio_default_threads"],
    }
    print(
        f"load average     {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print(
        f"model            {model.name} ({model.stat().st_size / 1e6:.1f} MB); JPEG photos "
        f"{a.photo_sizes}; {a.int8_cycles} bursts of {a.images} per run"
    )
    print(
        "decode+preprocess median by size: "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in figures["preprocess_ms_median_by_size"].items())
    )
    q1, q3 = figures["time_ratio_1_thread_quartiles"]
    print(
        f"1 thread         agent {figures['agent_per_inference_ms_median_1_thread']:.2f} ms vs bare "
        f"{figures['bare_per_inference_ms_median_1_thread']:.2f} ms per image: {figures['time_ratio_1_thread']:.3f}x "
        f"(quartiles {q1:.3f}-{q3:.3f}; target <= {TARGETS_INT8['time_ratio_1_thread']}x)  "
        f"{'PASS' if passed['time_ratio_1_thread'] else 'FAIL'}"
    )
    print(
        f"default threads  ({figures['default_threads']}) agent images/s = {figures['throughput_ratio_default_threads']:.3f}x "
        f"the best bare loop (1..{cores} threads; target >= {TARGETS_INT8['throughput_ratio_default_threads']}x)  "
        f"{'PASS' if passed['throughput_ratio_default_threads'] else 'FAIL'}"
    )
    for k, v in figures["throughput_ratio_by_run"].items():
        print(f"{k:16s} agent images/s = {v:.3f}x the best bare loop (info)")
    bare = figures["bare_per_inference_ms_median_by_threads"]
    print("bare loop        " + ", ".join(f"{k} thread(s) {v:.2f} ms" for k, v in bare.items()))
    print(
        "decode floor     (decode + preprocess, 1 thread, no agent) "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in figures["decode_floor_ms_median_by_size"].items())
        + f"; mean {figures['decode_floor_ms_mean_median']:.2f} ms per photo of the burst"
    )
    print(
        f"CPU floor        (decode + 1-thread invoke) / {cores} cores = {figures['cpu_floor_ms_median']:.2f} ms "
        f"per image (wall, this run); from CPU times, the best possible with these photos: "
        f"{figures['time_ratio_1_thread_best_possible']:.3f}x at 1 thread, "
        f"{figures['throughput_ratio_best_possible']:.3f}x images/s"
    )
    print(
        f"vs the floor     1 thread {figures['time_ratio_1_thread_vs_floor']:.3f}x max(bare, CPU floor) "
        f"(restated target <= {TARGETS_INT8['time_ratio_1_thread']}x); default threads images/s "
        f"{figures['throughput_ratio_default_threads_vs_floor']:.3f}x min(bare best, CPU floor)'s "
        f"(restated target >= {TARGETS_INT8['throughput_ratio_default_threads']}x)  (info)"
    )
    print(
        f"CPU per image    agent {cpu:.2f} ms (all threads, 1-thread run) = decode {decode_cpu:.2f} + invoke "
        f"{invoke_cpu:.2f} + the agent's own {figures['agent_overhead_cpu_ms_per_image']:.2f} ms; broker "
        f"{figures['broker_cpu_ms_per_image_median']:.2f} ms; images per CPU-second "
        f"{figures['images_per_cpu_second_ratio']:.3f}x the bare loop's (load-independent ceiling of the "
        "images/s ratio)"
    )
    report = {
        "benchmark": "agent_bench int8-jpeg",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "model": model.name,
        "images_per_burst": a.images,
        "cycles": a.int8_cycles,
        "skip": a.skip,
        "photo_sizes": [list(s) for s in sizes],
        "photos": list(PHOTOS),
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "stderr"} for k, v in runs.items()},
        "figures": figures,
        "targets": TARGETS_INT8,
        "pass": passed,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
    }
    a.out_int8.parent.mkdir(parents=True, exist_ok=True)
    a.out_int8.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out_int8}")
    return all(passed.values())


def float_case(a: argparse.Namespace) -> bool:
    model = build_model(a.workdir)
    input_tensor(model, a.workdir)
    load_before = os.getloadavg()[0]  # a shared machine: the figures mean more next to this
    ag = agent_run(model, a.workdir, a.images, a.cycles, a.skip)
    cycles = ag["cycles"]
    ratios = [c["per_inference_ms"] / c["bare_per_inference_ms"] for c in cycles]
    invoke_ratios = [c["inference_stage_median_ms"] / c["bare_median_ms"] for c in cycles]
    bare_rss = max(b["rss_mb"] for b in ag["bare_blocks"])
    agent_rss = max(c["agent_rss_mb"] for c in cycles)
    figures = {
        "time_ratio": statistics.median(ratios),
        "time_ratio_quartiles": _quartiles(ratios),
        "time_ratio_pooled": sum(c["per_inference_ms"] for c in cycles)
        / sum(c["bare_per_inference_ms"] for c in cycles),
        "inference_stage_ratio": statistics.median(invoke_ratios),
        "agent_per_inference_ms_median": statistics.median(c["per_inference_ms"] for c in cycles),
        "bare_per_inference_ms_median": statistics.median(b["per_inference_ms"] for b in ag["bare_blocks"]),
        "rss_ratio": agent_rss / bare_rss,
        "agent_rss_mb": agent_rss,
        "bare_rss_mb": bare_rss,
        "first_prediction_s": ag["first_prediction_s"],
    }
    passed = {
        "time_ratio": figures["time_ratio"] <= TARGETS["time_ratio"],
        "rss_ratio": figures["rss_ratio"] <= TARGETS["rss_ratio"],
        "first_prediction_s": figures["first_prediction_s"] <= TARGETS["first_prediction_s"],
    }
    print(
        f"load average     {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print(
        f"model            {model.name} ({model.stat().st_size / 1e6:.1f} MB), threads=1, "
        f"{a.cycles} bursts of {a.images} images, each between two bare blocks of {a.images} invokes"
    )
    q1, q3 = figures["time_ratio_quartiles"]
    print(
        f"per inference    agent {figures['agent_per_inference_ms_median']:.3f} ms, bare "
        f"{figures['bare_per_inference_ms_median']:.3f} ms (medians over bursts / blocks)"
    )
    print(
        f"time ratio       {figures['time_ratio']:8.3f}x  median of {len(ratios)} bursts, quartiles {q1:.3f}-{q3:.3f}, "
        f"pooled {figures['time_ratio_pooled']:.3f}x (target <= {TARGETS['time_ratio']}x)  "
        f"{'PASS' if passed['time_ratio'] else 'FAIL'}"
    )
    print(
        f"invoke ratio     {figures['inference_stage_ratio']:8.3f}x  (agent's inference stage vs bare, info)"
    )
    print(
        f"RSS              agent {agent_rss:.1f} MB vs bare {bare_rss:.1f} MB = {figures['rss_ratio']:.3f}x  "
        f"(target <= {TARGETS['rss_ratio']}x)  {'PASS' if passed['rss_ratio'] else 'FAIL'}"
    )
    print(
        f"first prediction {figures['first_prediction_s']:8.3f} s after spawn  (target <= "
        f"{TARGETS['first_prediction_s']} s)  {'PASS' if passed['first_prediction_s'] else 'FAIL'}"
    )
    report = {
        "benchmark": "agent_bench",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "model": model.name,
        "images_per_burst": a.images,
        "cycles": a.cycles,
        "skip": a.skip,
        "threads": 1,
        "agent": {k: v for k, v in ag.items() if k != "stderr"},
        "figures": figures,
        "targets": TARGETS,
        "pass": passed,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out}")
    return all(passed.values())


if __name__ == "__main__":
    sys.exit(main())
