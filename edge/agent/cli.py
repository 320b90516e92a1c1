"""``edge-agent`` (also ``python -m edge``): run a model on this device, or check a config file."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import edge
from edge.cli import Parser
from edge.errors import EdgeError

log = logging.getLogger("edge.agent")


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    # What argparse does, minus its `import shutil` (with bz2 and lzma: ~0.7 MB the agent would keep).
    try:
        width = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
        except (OSError, ValueError):
            width = 80
    return argparse.HelpFormatter(prog, width=width - 2)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="edge-agent", description=__doc__, formatter_class=_help_formatter)  # names near options
    p.add_argument("--version", action="version", version=f"edge-agent {edge.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        formatter_class=_help_formatter,
        help="run the model on a source and publish over MQTT",
        description="Flags override the config file, which EDGE_* variables override too.",
    )
    run.add_argument("--config", help="TOML config file (see docs/agent.md)")
    run.add_argument("--model", help="the .tflite model")
    run.add_argument("--labels", help="labels file: one label a line, or 'N label' lines")
    run.add_argument(
        "--input-mean",
        type=float,
        help="float = (pixel - mean) / std (default: from the model, as edge-convert wrote it)",
    )
    run.add_argument("--input-std", type=float, help="see --input-mean")
    run.add_argument(
        "--source",
        help="a file, a directory, 'mqtt', 'camera[:N]', rtsp:// or http(s):// stream, video file, 'picamera[:N]'",
    )
    run.add_argument("--broker", help="mqtt://[user:pass@]host:port")
    run.add_argument("--device-id", help="device id (topic level); default the hostname")
    run.add_argument("--prefix", help="topic prefix (default edge)")
    run.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="process what the source holds, wait for acks (or spool), exit 0",
    )
    run.add_argument(
        "--flush-timeout", type=float, help="seconds to wait for broker acks at exit (default 10)"
    )
    run.add_argument("--runtime", choices=["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"])
    run.add_argument("--threads", type=int, help="interpreter threads")
    run.add_argument("--delegate", choices=["auto", "cpu", "edgetpu"])
    run.add_argument("--top-k", type=int, help="classes per prediction (default 5)")
    run.add_argument("--threshold", type=float, help="minimum score")
    run.add_argument(
        "--task",
        choices=["auto", "classifier", "detector", "pose", "segmentation", "embedding", "generic"],
        help="what the model does (default auto: read from its outputs)",
    )
    run.add_argument(
        "--resize", choices=["auto", "stretch", "letterbox"], help="resize mode (auto: letterbox for YOLO)"
    )
    run.add_argument("--iou", type=float, help="detectors: NMS IoU threshold (default 0.45)")
    run.add_argument("--max-detections", type=int, help="detections per prediction (default 100)")
    run.add_argument(
        "--publish-mask", action="store_true", default=None, help="segmentation: PNG mask on .../mask"
    )
    run.add_argument(
        "--publish-thumbnail",
        action="store_true",
        default=None,
        help="a small JPEG of the input on .../thumbnail, tagged with its prediction's seq",
    )
    run.add_argument("--thumbnail-size", type=int, help="thumbnails: longest side in pixels (default 320)")
    run.add_argument("--thumbnail-rate", type=float, help="thumbnails per second at most (default 1)")
    run.add_argument(
        "--full-embedding",
        action="store_true",
        default=None,
        help="embedding models: publish the whole vector",
    )
    run.add_argument("--fps", type=float, help="streams: at most this many frames a second")
    run.add_argument("--motion-threshold", type=float, help="streams: skip frames that barely change (0-1)")
    run.add_argument(
        "--connect-timeout",
        type=float,
        help="streams/cameras with --once: give up when no frame came within this (seconds, default 30)",
    )
    run.add_argument("--state-dir", help="spool and records (default ~/.local/state/edge-agent/<device id>)")
    run.add_argument("--metrics-interval", type=float, help="seconds between metrics messages (0: off)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--username", help="MQTT user name (overrides the broker URL's)")
    run.add_argument(
        "--password-file", help="file whose first line is the MQTT password (or $EDGE_MQTT_PASSWORD)"
    )
    run.add_argument("--ca-file", help="CA certificate to verify an mqtts:// broker")
    run.add_argument("--cert-file", help="client certificate (brokers requiring one)")
    run.add_argument("--key-file", help="client certificate's private key")
    run.add_argument(
        "--update-key", action="append", help="public key trusted for model updates (repeatable)"
    )

    chk = sub.add_parser("check-config", help="validate a TOML config file", formatter_class=_help_formatter)
    chk.add_argument("file")
    return p


def _flags(a: argparse.Namespace) -> dict[str, Any]:
    tree: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    put("model.path", a.model)
    put("model.labels", a.labels)
    put("preprocess.mean", a.input_mean)
    put("preprocess.std", a.input_std)
    put("model.runtime", a.runtime)
    put("model.threads", a.threads)
    put("model.delegate", a.delegate)
    put("source.spec", a.source)
    put("mqtt.broker", a.broker)
    put("mqtt.device_id", a.device_id)
    put("mqtt.prefix", a.prefix)
    put("once", a.once)
    put("flush_timeout_s", a.flush_timeout)
    put("postprocess.top_k", a.top_k)
    put("postprocess.threshold", a.threshold)
    put("postprocess.iou", a.iou)
    put("postprocess.max_detections", a.max_detections)
    put("postprocess.publish_mask", a.publish_mask)
    put("postprocess.full_embedding", a.full_embedding)
    put("postprocess.publish_thumbnail", a.publish_thumbnail)
    put("postprocess.thumbnail_size", a.thumbnail_size)
    put("postprocess.thumbnail_rate", a.thumbnail_rate)
    put("model.task", a.task)
    put("preprocess.resize", a.resize)
    put("source.fps", a.fps)
    put("source.motion_threshold", a.motion_threshold)
    put("source.connect_timeout_s", a.connect_timeout)
    put("state_dir", a.state_dir)
    put("metrics.interval_s", a.metrics_interval)
    put("log_level", a.log_level)
    put("mqtt.username", a.username)
    put("mqtt.password_file", a.password_file)
    put("tls.ca_file", a.ca_file)
    put("tls.cert_file", a.cert_file)
    put("tls.key_file", a.key_file)
    put("ota.public_keys", a.update_key)
    return tree


def _setup_logging(level: str) -> None:
    # stderr, no timestamps when journald adds its own? Keep them: plain files and terminals need them.
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def check_config(path: str) -> int:
    from edge.agent.config import check_file, format_problem, unknown_variables

    for warning in unknown_variables():  # the file is checked alone, but a typo here matters at run time
        print(f"warning: {warning}", file=sys.stderr)
    try:
        problems = check_file(path)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not problems:
        print(f"{path}: ok")
        return 0
    print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(format_problem(problem), file=sys.stderr)
    return 1


def check_update_keys(public_keys: Sequence[str]) -> None:
    """Refuse to start with a trust key that cannot verify anything (else the first update fails late)."""
    if not public_keys:
        return  # every update is refused with reason no_key, and the status says trusted_keys: 0
    from edge.ota.keys import load_public_key

    for i, key in enumerate(public_keys):
        text = str(key)
        inline = len(text) >= 80 or "\n" in text
        where = f"ota.public_keys[{i}] ({'inline key' if inline else text})"
        if "PRIVATE KEY" in text or _file_says_private(text):
            raise EdgeError(
                f"{where} is a private key: a device must hold only the public key",
                "put the .pub file written by edge-flash keygen there, and delete the private key from the device",
            )
        try:
            load_public_key(text)
        except EdgeError as exc:
            raise EdgeError(
                f"{where}: {exc.what}", exc.fix or "check --update-key / ota.public_keys"
            ) from exc


def _file_says_private(text: str) -> bool:
    try:
        with open(os.path.expanduser(text), "rb") as fh:
            return b"PRIVATE KEY" in fh.read(4096)
    except (OSError, ValueError):
        return False


def run(a: argparse.Namespace) -> int:
    from edge.agent import footprint

    footprint.apply()  # before any thread starts and before paho is imported
    try:
        from edge.agent import statedir
        from edge.agent.app import Agent
        from edge.agent.config import DEFAULT_STATE_BASE, load_config, unknown_variables
        from edge.agent.sources import source_kind

        cfg = load_config(a.config, flags=_flags(a))
        _setup_logging(cfg.log_level)
        for warning in unknown_variables():
            log.warning("%s", warning)
        if cfg.source.spec is None:
            raise EdgeError("no source given", "pass --source FILE|DIR|mqtt|camera[:N] (or [source] spec)")
        source_kind(cfg.source.spec)  # a wrong path fails now, before the model loads
        if cfg.ota.enabled:
            check_update_keys(cfg.ota.public_keys)
        for note in statedir.prepare(
            cfg.resolved_state_dir(),
            cfg.device(),
            cfg.mqtt.prefix,
            default_base=DEFAULT_STATE_BASE.expanduser() if cfg.state_dir is None else None,
        ):
            log.warning("%s", note)
        agent = Agent(cfg)
    except EdgeError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    agent.install_signal_handlers()
    # `kill -USR1 <pid>` prints every thread's stack to the log: the way to see where a device hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return agent.run()
    except EdgeError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.command == "check-config":
        return check_config(a.file)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
