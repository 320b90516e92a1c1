"""Agent configuration: TOML file, then ``EDGE_*`` environment variables, then command-line flags.

Each section is a :class:`edge.validation.Record` (a frozen ``msgspec.Struct``): typed, read-only,
unknown keys refused, constraints and descriptions in ``Annotated[..., Meta(...)]``. Every field has a
title and a description: ``edge-agent check-config`` and docs/agent.md rely on them. Sections are
separate so later features add a section or a field without touching the others.

Environment variables: ``EDGE_<KEY>`` for top-level keys, ``EDGE_<SECTION>_<KEY>`` for the rest, one
underscore between levels (``EDGE_MQTT_BROKER``, ``EDGE_OTA_GUARD_TIMEOUT_S``); lists as
comma-separated text or a JSON array. Other ``EDGE_*`` names are reported by :func:`unknown_variables`.
"""

# msgspec evaluates annotations at run time: Optional keeps the records importable on Python 3.9.
# ruff: noqa: UP045
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

import msgspec
import msgspec.toml
from msgspec import Meta, field

from edge.agent import system
from edge.agent.audit import BUILTIN_ACTIONS, action_allowed
from edge.errors import EdgeError
from edge.model.guard import GuardLimits
from edge.ota.manifest import DEFAULT_MAX_BYTES
from edge.transport.topics import INPUTS
from edge.transport.url import BrokerURLError, parse_broker_url
from edge.validation import Problem, Record, Secret, decode, nearest, problems, record_type, unknown_key

ENV_PREFIX = "EDGE_"
# EDGE_* variables that are not config keys: read elsewhere, never warned about.
OTHER_VARIABLES = frozenset(
    {
        "EDGE_TFLITE_RUNTIME_PYTHON",  # converter: a Python with tflite-runtime (op-version checks)
        "EDGE_EDGETPU_LIBRARY",  # edge.model.delegates.edgetpu: libedgetpu path
        "EDGE_OTA_PAUSE_AT",  # edge.ota.install: crash-safety test seam
        "EDGE_CORAL_TESTDATA",  # tests and benchmarks: where the test models are
        "EDGE_VENV",  # dev.sh: where the development venvs live
        "EDGE_TFLITE_VENV",
    }
)
DEFAULT_STATE_BASE = Path("~/.local/state/edge-agent")
SECRET_MASK = "**********"
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")  # scheme://user:PASSWORD@host


def _topic_level_problem(v: str) -> str | None:
    if any(c in v for c in "+#\x00") or v.startswith("/") or v.endswith("/"):
        return "must not contain MQTT wildcards (+ #) nor start or end with '/'"
    return None


class MqttConfig(Record, frozen=True):
    broker: Annotated[
        str, Meta(title="Broker URL", description="mqtt://[user:pass@]host:port (or mqtts:// for TLS)")
    ] = "mqtt://localhost:1883"
    prefix: Annotated[
        str, Meta(min_length=1, title="Topic prefix", description="Topics are <prefix>/<device>/...")
    ] = "edge"
    device_id: Annotated[
        Optional[str],
        Meta(title="Device id", description="Topic segment naming this device; default the hostname"),
    ] = None
    client_id: Annotated[
        Optional[str], Meta(title="MQTT client id", description="Default edge-agent-<device id>")
    ] = None
    keepalive_s: Annotated[
        int, Meta(ge=5, le=3600, title="Keepalive", description="MQTT keepalive in seconds")
    ] = 30
    protocol: Annotated[
        Literal[5, 311], Meta(title="MQTT protocol", description="5 (MQTT 5) or 311 (MQTT 3.1.1)")
    ] = 5
    backoff_min_s: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            title="Reconnect backoff minimum",
            description="First wait before reconnecting (doubles, with jitter), seconds; <= backoff_max_s",
        ),
    ] = 1.0
    backoff_max_s: Annotated[
        float,
        Meta(
            gt=0,
            le=86400,
            title="Reconnect backoff maximum",
            description="Longest wait between reconnect attempts, seconds",
        ),
    ] = 120.0
    username: Annotated[
        Optional[str], Meta(title="User name", description="Overrides the user in the broker URL")
    ] = None
    password: Annotated[
        Optional[Secret],
        Meta(
            title="Password",
            description="Prefer password_file or EDGE_MQTT_PASSWORD; never logged, shown as ********** "
            "in status, errors and check-config",
        ),
    ] = None
    password_file: Annotated[
        Optional[Path],
        Meta(
            title="Password file",
            description="First line is the MQTT password (chmod 600); wins over password",
        ),
    ] = None

    @classmethod
    def field_problems(cls, name: str, value: Any) -> list[Problem]:
        why = None
        if name == "broker":
            try:
                parse_broker_url(value)
            except BrokerURLError as exc:
                why = exc.what
        elif name == "prefix":
            why = _topic_level_problem(value)
        elif name == "device_id" and value is not None and (not value or any(c in value for c in "+#/\x00")):
            why = "must be non-empty without '/', '+' or '#' (it is one topic level)"
        return [("", value, why)] if why else []

    def cross_check(self) -> list[Problem]:
        if self.backoff_min_s > self.backoff_max_s:
            return [
                (
                    "backoff_min_s",
                    self.backoff_min_s,
                    f"must not exceed backoff_max_s ({self.backoff_max_s:g})",
                )
            ]
        return []


class TlsConfig(Record, frozen=True):
    ca_file: Annotated[
        Optional[Path], Meta(title="CA file", description="CA certificate(s) that signed the broker's")
    ] = None
    cert_file: Annotated[
        Optional[Path],
        Meta(title="Client certificate", description="For brokers with require_certificate true"),
    ] = None
    key_file: Annotated[Optional[Path], Meta(title="Client key", description="Private key of cert_file")] = (
        None
    )
    insecure: Annotated[
        bool,
        Meta(
            title="Skip verification",
            description="Do not verify the broker's certificate (test brokers only)",
        ),
    ] = False


class ModelConfig(Record, frozen=True):
    path: Annotated[
        Optional[Path], Meta(title="Model", description="The .tflite model to run (required to run)")
    ] = None
    labels: Annotated[
        Optional[Path], Meta(title="Labels", description="One label a line, or 'N label' lines")
    ] = None
    runtime: Annotated[
        Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"],
        Meta(
            title="Runtime",
            description="TFLite runtime; auto = ai_edge_litert, else tflite_runtime, else tensorflow",
        ),
    ] = "auto"
    threads: Annotated[
        Optional[Annotated[int, Meta(ge=1, le=64)]],
        Meta(title="Threads", description="Interpreter threads (1-64); default the runtime's"),
    ] = None
    delegate: Annotated[
        Literal["auto", "cpu", "edgetpu"],
        Meta(title="Delegate", description="auto: Edge TPU models use the Edge TPU, else their CPU twin"),
    ] = "auto"
    max_bytes: Annotated[
        Optional[Annotated[int, Meta(ge=1)]],
        Meta(title="Model size limit", description="Refuse larger model files"),
    ] = None
    task: Annotated[
        Literal["auto", "classifier", "detector", "pose", "segmentation", "embedding", "generic"],
        Meta(
            title="Task",
            description="What the model does; auto reads it from the output signature (status.task says why)",
        ),
    ] = "auto"


class SourceConfig(Record, frozen=True):
    spec: Annotated[
        Optional[str],
        Meta(
            title="Source",
            description="A file, a directory, 'mqtt', 'camera[:N]', an rtsp:// or http(s):// stream, a video "
            "file, or 'picamera[:N]'",
        ),
    ] = None
    poll_interval_s: Annotated[
        float,
        Meta(
            gt=0,
            le=60,
            title="Directory poll interval",
            description="How often a directory is scanned for new files",
        ),
    ] = 0.5
    settle_s: Annotated[
        float,
        Meta(
            ge=0,
            le=60,
            title="Settle time",
            description="A new file is read once unchanged for this long (half-written files)",
        ),
    ] = 0.2
    camera_interval_s: Annotated[
        float,
        Meta(
            ge=0,
            le=3600,
            title="Camera interval",
            description="camera[:N]: seconds between frames taken when no fps cap is set (0: as fast as the "
            "model runs)",
        ),
    ] = 1.0
    fps: Annotated[
        Optional[Annotated[float, Meta(gt=0, le=1000)]],
        Meta(
            title="Stream frame rate cap",
            description="Streams: take at most this many frames a second (the newest each time); default as "
            "fast as the model runs",
        ),
    ] = None
    motion_threshold: Annotated[
        Optional[Annotated[float, Meta(ge=0, le=1)]],
        Meta(
            title="Motion threshold",
            description="Streams: skip frames that differ from the last one inferred by less than this (0-1)",
        ),
    ] = None
    connect_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            le=86400,
            title="Stream connect timeout",
            description="Streams and cameras, --once runs: give up (exit 1) when no frame came within this "
            "many seconds; a long-running agent keeps reconnecting",
        ),
    ] = 30.0
    queue_size: Annotated[
        int,
        Meta(
            ge=1,
            le=100_000,
            title="MQTT request queue",
            description="Pending 'infer' requests; more are refused with an errors message",
        ),
    ] = 64
    max_request_bytes: Annotated[
        int,
        Meta(
            ge=1,
            title="Largest request",
            description="An 'infer' request over this many bytes is refused before decoding",
        ),
    ] = 16 * 1024 * 1024
    max_queue_bytes: Annotated[
        int,
        Meta(
            ge=1,
            title="Request queue bytes",
            description="Pending 'infer' requests may hold this many bytes; more are refused",
        ),
    ] = 32 * 1024 * 1024


class PreprocessConfig(Record, frozen=True):
    mean: Annotated[
        Optional[float],
        Meta(
            title="Input mean",
            description="float = (pixel - mean) / std; unset = raw pixels (quantized) or [0,1]; finite",
        ),
    ] = None
    std: Annotated[Optional[float], Meta(title="Input std", description="See mean; finite, not 0")] = None
    resample: Annotated[
        Literal["nearest", "bilinear", "bicubic", "lanczos", "box"],
        Meta(title="Resize filter", description="Pillow resampling filter"),
    ] = "bilinear"
    resize: Annotated[
        Literal["auto", "stretch", "letterbox"],
        Meta(
            title="Resize mode",
            description="stretch to the input, or letterbox (keep the aspect ratio, pad); auto = letterbox for YOLO",
        ),
    ] = "auto"
    max_image_pixels: Annotated[
        int,
        Meta(
            ge=1, title="Image size limit", description="Refuse images with more pixels (decompression bombs)"
        ),
    ] = 40_000_000

    @classmethod
    def field_problems(cls, name: str, value: Any) -> list[Problem]:
        return [("", value, "must not be 0")] if name == "std" and value == 0 else []


TopK = Annotated[
    int, Meta(ge=1, le=1000, title="Top k", description="Classes (or detections) per prediction")
]
Threshold = Annotated[
    float,
    Meta(ge=0.0, le=1.0, title="Score threshold", description="Drop classes/detections scoring below it"),
]

Iou = Annotated[
    float, Meta(ge=0.0, le=1.0, title="NMS IoU", description="Detectors: overlap above which NMS drops a box")
]
MaxDetections = Annotated[
    int, Meta(ge=1, le=10_000, title="Max detections", description="Detections (or poses) per prediction")
]


class PostprocessConfig(Record, frozen=True):
    top_k: TopK = 5
    threshold: Threshold = 0.0
    max_output_values: Annotated[
        int,
        Meta(
            ge=1,
            title="Generic output cap",
            description="Values per output tensor sent for non-classifier models",
        ),
    ] = 1024
    iou: Iou = 0.45
    max_detections: MaxDetections = 100
    publish_mask: Annotated[
        bool,
        Meta(
            title="Publish masks",
            description="Segmentation: also publish the class mask as a PNG on <prefix>/<device>/mask",
        ),
    ] = False
    publish_thumbnail: Annotated[
        bool,
        Meta(
            title="Publish thumbnails",
            description="Also publish a small JPEG of the input on <prefix>/<device>/thumbnail, tagged "
            "with its prediction's seq (for dashboards to draw results on)",
        ),
    ] = False
    thumbnail_size: Annotated[
        int,
        Meta(ge=16, le=4096, title="Thumbnail size", description="Longest side of a thumbnail, in pixels"),
    ] = 320
    thumbnail_quality: Annotated[
        int, Meta(ge=1, le=95, title="Thumbnail quality", description="JPEG quality of a thumbnail")
    ] = 70
    thumbnail_max_bytes: Annotated[
        int,
        Meta(
            ge=4096,
            le=1024 * 1024,
            title="Thumbnail size cap",
            description="Bytes per thumbnail at most: lower quality, then a smaller picture, else none",
        ),
    ] = 64 * 1024
    thumbnail_rate: Annotated[
        float,
        Meta(
            gt=0,
            le=100,
            title="Thumbnail rate",
            description="Thumbnails per second at most, whatever the input rate",
        ),
    ] = 1.0
    full_embedding: Annotated[
        bool,
        Meta(
            title="Full embeddings",
            description="Embedding models: publish the whole vector, not its first 8 values",
        ),
    ] = False


class SettingsUpdate(Record, frozen=True):
    """The parameters of the ``set`` command: what changes at run time, with the config's constraints."""

    top_k: Optional[TopK] = None
    threshold: Optional[Threshold] = None
    iou: Optional[Iou] = None
    max_detections: Optional[MaxDetections] = None


class SpoolConfig(Record, frozen=True):
    path: Annotated[
        Optional[Path], Meta(title="Spool file", description="SQLite spool; default <state_dir>/spool.db")
    ] = None
    max_bytes: Annotated[
        int,
        Meta(
            ge=4096,
            title="Spool size limit",
            description="Oldest messages are dropped (and counted) beyond this",
        ),
    ] = 64 * 1024 * 1024
    max_age_s: Annotated[
        float,
        Meta(gt=0, title="Spool age limit", description="Messages older than this are dropped (and counted)"),
    ] = 7 * 24 * 3600.0


class MetricsConfig(Record, frozen=True):
    interval_s: Annotated[
        float,
        Meta(ge=0, title="Metrics interval", description="Seconds between metrics messages; 0 disables them"),
    ] = 10.0
    window_s: Annotated[
        float, Meta(gt=0, title="Latency window", description="Percentiles cover this many seconds")
    ] = 60.0


class HomeAssistantConfig(Record, frozen=True):
    enabled: Annotated[
        bool,
        Meta(
            title="Home Assistant discovery",
            description="Publish MQTT discovery configs (retained) so Home Assistant creates sensors for this device",
        ),
    ] = True
    discovery_prefix: Annotated[
        str,
        Meta(
            min_length=1,
            title="Discovery prefix",
            description="Home Assistant's discovery prefix (its MQTT integration setting)",
        ),
    ] = "homeassistant"
    objects: Annotated[
        list[str],
        Meta(
            title="Object labels",
            description="Detectors: a count sensor and an occupancy binary_sensor per label (Frigate-style)",
        ),
    ] = field(default_factory=list)

    @classmethod
    def field_problems(cls, name: str, value: Any) -> list[Problem]:
        why = None
        if name == "discovery_prefix":
            why = _topic_level_problem(value)
        elif name == "objects":
            from edge.contract.homeassistant import check_objects  # on use: it loads the JSON Schemas

            try:
                check_objects(value)
            except ValueError as exc:
                why = str(exc)
        return [("", value, why)] if why else []


class OtaConfig(Record, frozen=True):
    """Signed over-the-air model updates (see :mod:`edge.ota.handler`)."""

    enabled: Annotated[
        bool, Meta(title="Accept updates", description="accept model updates on <prefix>/<device>/model/set")
    ] = True
    public_keys: Annotated[
        list[str],
        Meta(
            title="Trusted update keys",
            description="Ed25519 public keys trusted for updates: .pub file paths, PEM or base64 text; "
            "checked at start-up, read again for each update. Empty: every update is refused (reason no_key)",
        ),
    ] = field(default_factory=list)
    max_bytes: Annotated[
        int, Meta(gt=0, title="Update size limit", description="largest model accepted over the air")
    ] = DEFAULT_MAX_BYTES
    max_pending_bytes: Annotated[
        int,
        Meta(
            gt=0,
            title="Queued updates limit",
            description="updates waiting to be installed, in bytes; beyond: refused as busy",
        ),
    ] = 2 * DEFAULT_MAX_BYTES
    guard: Annotated[
        GuardLimits, Meta(title="Health check limits", description="limits of the model health check")
    ] = field(default_factory=GuardLimits)


def known_actions() -> list[str]:
    """Every action name ``commands.disabled`` may list: the command registry's and ``model/set``."""
    return sorted({*BUILTIN_ACTIONS, INPUTS["model_set"]})


class CommandsConfig(Record, frozen=True):
    """Which command actions the agent executes (see :mod:`edge.agent.audit`)."""

    disabled: Annotated[
        list[str],
        Meta(
            title="Disabled actions",
            description="actions refused with 'disabled', e.g. "
            '["bench", "model/set"]; \'*\' disables every action except ping',
        ),
    ] = field(default_factory=list)

    def allows(self, action: str) -> bool:
        return action_allowed(self.disabled, action)

    @classmethod
    def field_problems(cls, name: str, value: Any) -> list[Problem]:
        if name != "disabled":
            return []
        valid = [*known_actions(), "*"]
        return [
            (f"[{i}]", action, unknown_key(action, valid, what="action"))
            for i, action in enumerate(value)
            if action not in valid
        ]


class AuditConfig(Record, frozen=True):
    """Where the command audit log goes."""

    enabled: Annotated[bool, Meta(title="Audit commands", description="record every command received")] = True
    file: Annotated[
        Optional[Path],
        Meta(title="Audit file", description="JSON-lines file; default <state_dir>/audit.jsonl"),
    ] = None
    publish: Annotated[
        bool,
        Meta(
            title="Publish audit records",
            description="also publish each record on <prefix>/<device>/audit (QoS 1)",
        ),
    ] = True
    max_bytes: Annotated[
        int,
        Meta(
            ge=4096, title="Audit file size limit", description="the file is rotated to <file>.1 beyond this"
        ),
    ] = 5 * 1024 * 1024


class AgentConfig(Record, frozen=True):
    state_dir: Annotated[
        Optional[Path],
        Meta(
            title="State directory",
            description="Spool, sequence numbers, audit log, installed models and the directory source's "
            "record; default ~/.local/state/edge-agent/<device id>",
        ),
    ] = None
    once: Annotated[bool, Meta(title="Once", description="Process what the source holds, flush, exit")] = (
        False
    )
    flush_timeout_s: Annotated[
        float,
        Meta(
            ge=0,
            le=3600,
            title="Flush timeout",
            description="At exit, wait this long for broker acks; the rest stays spooled",
        ),
    ] = 10.0
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], Meta(title="Log level", description="stderr log level")
    ] = "INFO"
    mqtt: Annotated[MqttConfig, Meta(title="MQTT", description="Broker connection")] = field(
        default_factory=MqttConfig
    )
    model: Annotated[ModelConfig, Meta(title="Model", description="What runs, and where")] = field(
        default_factory=ModelConfig
    )
    source: Annotated[SourceConfig, Meta(title="Source", description="Where inputs come from")] = field(
        default_factory=SourceConfig
    )
    preprocess: Annotated[
        PreprocessConfig, Meta(title="Preprocessing", description="Image -> input tensor")
    ] = field(default_factory=PreprocessConfig)
    postprocess: Annotated[
        PostprocessConfig, Meta(title="Postprocessing", description="Output tensors -> results")
    ] = field(default_factory=PostprocessConfig)
    spool: Annotated[SpoolConfig, Meta(title="Spool", description="On-disk store and forward")] = field(
        default_factory=SpoolConfig
    )
    metrics: Annotated[MetricsConfig, Meta(title="Metrics", description="Health reports")] = field(
        default_factory=MetricsConfig
    )
    homeassistant: Annotated[
        HomeAssistantConfig, Meta(title="Home Assistant", description="MQTT discovery for Home Assistant")
    ] = field(default_factory=HomeAssistantConfig)
    tls: Annotated[
        TlsConfig, Meta(title="TLS", description="mqtts:// broker connection (TLS 1.2 or newer)")
    ] = field(default_factory=TlsConfig)
    ota: Annotated[
        OtaConfig,
        Meta(
            title="Model updates",
            description="Signed over-the-air model updates on <prefix>/<device>/model/set",
        ),
    ] = field(default_factory=OtaConfig)
    audit: Annotated[AuditConfig, Meta(title="Audit log", description="Command audit log")] = field(
        default_factory=AuditConfig
    )
    commands: Annotated[
        CommandsConfig, Meta(title="Commands", description="Which command actions this agent executes")
    ] = field(default_factory=CommandsConfig)

    def device(self) -> str:
        """The device id: ``mqtt.device_id``, else the hostname."""
        return self.mqtt.device_id or system.hostname()

    def resolved_state_dir(self) -> Path:
        """``state_dir``, else ``~/.local/state/edge-agent/<device id>`` (one per device: never shared)."""
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        return DEFAULT_STATE_BASE.expanduser() / self.device()


# --- reading and layering -----------------------------------------------------------------------------


class ConfigError(EdgeError):
    """The configuration is invalid; ``problems`` lists (key path, value, message), secrets masked."""

    exit_code = 2

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = [(k, shown(k, v), m) for k, v, m in problems]
        lines = [format_problem(p) for p in self.problems]
        super().__init__(
            f"invalid configuration ({source}):\n" + "\n".join(lines),
            "fix the listed keys (edge-agent check-config FILE checks a file)",
        )


def format_problem(problem: Problem) -> str:
    key, value, msg = problem
    return f"  {key} = {value!r}: {msg}" if value is not _ABSENT else f"  {key}: {msg}"


_ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "<missing>"})()


def _secret_keys(cls: type[Record] = AgentConfig, prefix: str = "") -> set[str]:
    out = set()
    for f in msgspec.structs.fields(cls):
        key = f"{prefix}{f.name}"
        sub = record_type(f.type)
        if sub is not None:
            out |= _secret_keys(sub, key + ".")
        elif Secret in get_args(_bare(f.type)) or _bare(f.type) is Secret:
            out.add(key)
    return out


def _bare(typ: Any) -> Any:
    """``X`` of ``Annotated[X, Meta(...)]``."""
    return get_args(typ)[0] if get_origin(typ) is Annotated else typ


def shown(key: str, value: Any) -> Any:
    """A value as printed in errors and check-config: secrets masked, URL credentials masked."""
    if key in _secret_keys() or isinstance(value, Secret):
        return SECRET_MASK if value is not None else None
    if isinstance(value, str) and "://" in value:
        return _URL_PASSWORD.sub(r"\1***@", value)
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file as plain tables: validated afterwards, key by key (:func:`edge.validation.problems`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise EdgeError(f"config file not found: {p}", "check the path given to --config") from exc
    except OSError as exc:
        raise EdgeError(f"cannot read the config file {p}: {exc.strerror}", "check its permissions") from exc
    try:
        tables: dict[str, Any] = msgspec.toml.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(str(p), [("<file>", str(p), f"not valid TOML: {exc}")]) from exc
    return tables


def env_names(
    cls: type[Record] = AgentConfig, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """(variable name, key path, field type) of every config key, e.g. ``EDGE_MQTT_BROKER``."""
    for f in msgspec.structs.fields(cls):
        sub = record_type(f.type)
        if sub is not None:
            yield from env_names(sub, (*path, f.name))
        else:
            yield ENV_PREFIX + "_".join((*path, f.name)).upper(), (*path, f.name), f.type


def _is_list(typ: Any) -> bool:
    return get_origin(_bare(typ)) is list


def _env_value(text: str, typ: Any) -> Any:
    if _is_list(typ):
        if text.strip().startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return text  # reported as "expected an array" by validation
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The config keys set by ``EDGE_*`` variables, as a nested dict of (text) values."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, path, typ in env_names():
        if name in environ:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _env_value(environ[name], typ)
    return out


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``EDGE_*`` variable that is no config key (a typo is otherwise silently ignored)."""
    environ = os.environ if environ is None else environ
    valid = [name for name, _, _ in env_names()]
    out = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in valid and name not in OTHER_VARIABLES:
            near = nearest(name, valid)
            out.append(
                f"environment variable {name} is not a config key and is ignored"
                + (f" (did you mean {near}?)" if near else "")
                + "; the names are EDGE_<SECTION>_<KEY> with one underscore, listed in docs/agent.md"
            )
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def validate(data: Mapping[str, Any], source: str) -> AgentConfig:
    """``data`` as an AgentConfig, or a :class:`ConfigError` listing every problem."""
    found = check_data(data)
    if found:
        raise ConfigError(source, found)
    return decode(AgentConfig, data, strict=False)


def check_data(data: Mapping[str, Any]) -> list[Problem]:
    # Lax: environment variables arrive as text ("311", "true"), and TOML users write "5" now and then.
    return problems(AgentConfig, data, strict=False)


def load_config(
    path: str | Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """defaults < TOML file < EDGE_* variables < flags (nested dicts, None values ignored)."""
    data: dict[str, Any] = read_toml(path) if path else {}
    data = merge(data, env_overrides(environ))
    data = merge(data, flags or {})
    return validate(data, str(path or "flags and environment"))


def check_file(path: str | Path) -> list[Problem]:
    """Problems of a config file on its own (no env, no flags), secrets masked; empty when valid."""
    try:
        data = read_toml(path)
    except ConfigError as exc:
        return exc.problems
    return [(k, shown(k, v), m) for k, v, m in check_data(data)]


def described_fields(
    cls: type[Record] = AgentConfig, prefix: str = ""
) -> Iterator[tuple[str, Any, Meta | None]]:
    """(key path, field info, its Meta) of every key, nested sections included (docs and tests)."""
    for f in msgspec.structs.fields(cls):
        metas = (
            [m for m in get_args(f.type)[1:] if isinstance(m, Meta)]
            if get_origin(f.type) is Annotated
            else []
        )
        yield prefix + f.name, f, metas[0] if metas else None
        sub = record_type(_bare(f.type))
        if sub is not None:
            yield from described_fields(sub, prefix + f.name + ".")


__all__ = [
    "AgentConfig",
    "AuditConfig",
    "CommandsConfig",
    "ConfigError",
    "GuardLimits",
    "OtaConfig",
    "Secret",
    "check_file",
    "env_overrides",
    "load_config",
    "unknown_variables",
]
