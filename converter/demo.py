"""``edge-demo``: the whole chain on one machine, start to finish, by itself.

train a small digits CNN -> edge-convert it to int8 -> start a broker (unless
--broker is given: mosquitto when on PATH, else the pure-Python amqtt) -> run edge-agent on sample digit images -> read the
predictions and latencies back with edge-watch's subscriber -> print them and
where every artefact is.

It lives in ``converter`` because it trains with TensorFlow; the agent runs as
its own process (``python -m edge run``) exactly as on a board.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from converter import demo_broker
from converter.demo_broker import LocalBroker
from edge.cli import parser, use_color
from edge.errors import EdgeError, run_command

DEVICE = "demo"


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 to ``path`` for a while: TensorFlow's C++ start-up chatter goes to a log, not the screen."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _say(step: str) -> None:
    print(f"\n== {step}", flush=True)


def _child_env() -> dict[str, str]:
    """The agent child imports this very checkout/installation of ``edge``."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Broker:
    """The broker the demo talks to: the one given with --broker, or a throw-away local one."""

    def __init__(self, url: str | None, workdir: Path, kind: str) -> None:
        self.given = url
        self.workdir = workdir
        self.kind = kind
        self.local: LocalBroker | None = None
        self.protocol = 5

    def start(self) -> str:
        if self.given:
            self.description = f"the broker you gave ({self.given})"
            return self.given
        self.local, why = demo_broker.start(self.kind, self.workdir)
        self.protocol = self.local.protocol
        speaks = "MQTT 3.1.1 only: the agent uses protocol 311" if self.protocol == 311 else "MQTT 5"
        self.description = f"{self.local.name} on {self.local.url} ({why}; {speaks}; log {self.local.log})"
        return self.local.url

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()


def train(out: Path, epochs: int) -> dict[str, Any]:
    from converter.examples import export_images, export_npz, train_digits_cnn

    info = train_digits_cnn(out / "model" / "digits.keras", epochs=epochs)
    info["data"] = str(export_npz(out / "model" / "digits_train.npz", "train"))
    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)
    info["images"] = [
        str(p) for p in export_images(images, per_class=2, size=32, split="test", by_class=False)
    ]
    return info


def convert(out: Path, model: str, data: str) -> dict[str, Any]:
    from converter.api import convert as run_convert
    from converter.report import table

    rep = run_convert(
        model, output=out / "model" / "digits_int8.tflite", data=data, quantize_mode="int8", quiet=True
    )
    print(table(rep))
    return rep


def agent_config(out: Path, broker_url: str, protocol: int, tflite: Path) -> Path:
    labels = out / "model" / "labels.txt"
    labels.write_text("".join(f"{i}\n" for i in range(10)))
    cfg = out / "agent.toml"
    # The model was trained on pixels / 255: say so, rather than rely on the int8 input's scale.
    cfg.write_text(f"""# edge-agent configuration written by edge-demo (see docs/agent.md)
state_dir = "{(out / "state").as_posix()}"
flush_timeout_s = 20

[mqtt]
broker = "{broker_url}"
device_id = "{DEVICE}"
protocol = {protocol}

[model]
path = "{tflite.as_posix()}"
labels = "{labels.as_posix()}"

[source]
spec = "{(out / "images").as_posix()}"

[preprocess]
mean = 0.0
std = 255.0

[postprocess]
top_k = 3

[metrics]
interval_s = 1.0
""")
    return cfg


def run_demo(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    shutil.rmtree(out / "state", ignore_errors=True)  # a fresh spool: this run's numbers only

    _say(f"1/5 training a small digits CNN ({args.epochs} epochs, scikit-learn's 8x8 digits)")
    tf_log = out / "logs" / "tensorflow.log"
    tf_log.unlink(missing_ok=True)
    with _stderr_to(tf_log):
        info = train(out, args.epochs)
    print(
        f"test accuracy {info['test_accuracy']:.3f}; model {info['path']}; "
        f"{len(info['images'])} sample images in {out / 'images'}"
    )

    _say(
        "2/5 edge-convert: full int8, calibrated on the training digits, accuracy measured in ai-edge-litert"
    )
    with _stderr_to(tf_log):
        rep = convert(out, info["path"], info["data"])
    tflite = Path(rep["output"]["path"])
    report = Path(rep["output"].get("report_path") or tflite.with_name(tflite.stem + ".report.json"))

    _say("3/5 broker")
    broker = Broker(args.broker, out / "broker", args.broker_kind)
    url = broker.start()
    print(f"using {broker.description}")
    try:
        return _run_agent_and_watch(args, out, url, broker, tflite, report, t0)
    finally:
        broker.stop()


def _run_agent_and_watch(
    args: argparse.Namespace, out: Path, url: str, broker: Broker, tflite: Path, report: Path, t0: float
) -> int:
    from edge.transport.url import parse_broker_url
    from edge.watch.cli import Watcher
    from edge.watch.state import Fleet
    from edge.watch.table import render

    images = sorted((out / "images").glob("*.png"))
    fleet = Fleet(device=DEVICE)
    csv_path = out / "predictions.csv"
    csv_path.unlink(missing_ok=True)
    watcher = Watcher(parse_broker_url(url), fleet, csv_path=csv_path)
    watcher.start()
    if not watcher.connected.wait(15):
        raise EdgeError(
            f"the subscriber could not connect to {url}: {watcher.connect_error or 'no answer'}",
            "check --broker, or leave it out to start a local broker",
        )

    _say(f"4/5 edge-agent on {len(images)} images (python -m edge run --config {out / 'agent.toml'} --once)")
    cfg = agent_config(out, url, broker.protocol, tflite)
    log_path = out / "logs" / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--once"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            timeout=args.agent_timeout,
        )
    if proc.returncode != 0:
        watcher.stop()
        raise EdgeError(
            f"edge-agent exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-2000:]}",
            f"see {log_path}",
        )

    _say("5/5 predictions read back from the broker")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snap = fleet.snapshot()
        dev = snap["devices"][0] if snap["devices"] else None
        if dev and dev["predictions"] + dev["errors"] >= len(images) and dev["availability"] == "offline":
            break
        time.sleep(0.1)
    watcher.stop()
    preds = _predictions(csv_path)
    correct = 0
    print(f"{'image':<22} {'predicted':>9} {'score':>6} {'latency ms':>10}  (inference ms)")
    for row in preds:
        truth = re.match(r"digit(\d)_", row["source"])
        ok = truth is not None and truth.group(1) == row["label"]
        correct += ok
        print(
            f"{row['source']:<22} {row['label']:>9} {float(row['score']):>6.3f} "
            f"{float(row['latency_total_ms']):>10.2f}  ({float(row['latency_inference_ms']):.3f})"
            f"{'' if ok else '   <- wrong'}"
        )
    snap = fleet.snapshot()
    print()
    print("\n".join(render(snap, color=use_color(sys.stdout), broker=url)))
    if not preds:
        raise EdgeError(
            f"no prediction came back from the broker (agent log: {log_path})",
            "look at the agent log for errors",
        )
    print(
        f"\n{correct}/{len(preds)} digits right; {snap['malformed']} malformed messages; "
        f"whole chain in {time.monotonic() - t0:.0f} s"
    )
    _say("artefacts")
    for name, path in (
        ("Keras model", out / "model" / "digits.keras"),
        ("int8 model", tflite),
        ("conversion report", report),
        ("sample images", out / "images"),
        ("agent config", out / "agent.toml"),
        ("agent log", log_path),
        ("TensorFlow log", out / "logs" / "tensorflow.log"),
        ("predictions (CSV)", csv_path),
        ("broker log", broker.local.log if broker.local else out / "broker" / "none"),
    ):
        if path.exists():
            print(f"  {name:<18} {path}")
    watch_url = url if broker.given else "mqtt://YOUR-BROKER:1883"
    print(
        f"\nnext: watch a live fleet with  edge-watch --broker {watch_url} --web 127.0.0.1:8080\n"
        "      (docs/subscribers.md: schemas, Home Assistant, Node-RED, Python)"
    )
    if len(preds) < len(images):
        print(f"edge-demo: only {len(preds)} of {len(images)} predictions came back", file=sys.stderr)
        return 1
    return 0


def _predictions(csv_path: Path) -> list[dict[str, str]]:
    import csv

    if not csv_path.exists():
        return []
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return sorted({r["seq"]: r for r in rows}.values(), key=lambda r: int(r["seq"]))


def build_parser() -> argparse.ArgumentParser:
    p = parser("edge-demo", __doc__)
    p.add_argument("--out", default="out/demo", help="where everything goes")
    p.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    p.add_argument(
        "--broker-kind",
        choices=demo_broker.KINDS,
        default="auto",
        help="which local broker to start without --broker: auto is mosquitto when on PATH, else amqtt "
        "(pure Python, MQTT 3.1.1; pip install 'edge-ml-toolkit[demo]')",
    )
    p.add_argument("--epochs", type=int, default=15, help="training epochs")
    p.add_argument("--agent-timeout", type=float, default=180, help="seconds the agent may take")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ start-up chatter and Python warnings would bury the demo's own output
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=UserWarning)
    return run_command("edge-demo", lambda: run_demo(args))


if __name__ == "__main__":
    sys.exit(main())
