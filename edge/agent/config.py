"""Agent configuration: TOML file, then ``EDGE_*`` environment variables, then command-line flags.

Sections are separate models so later features (TLS, OTA, discovery) add a
section or a field without touching the others. Every field has a title and
a description: ``edge-agent check-config`` and docs/agent.md rely on them.
"""

# pydantic evaluates annotations at run time: Optional keeps the models importable on Python 3.9.
# ruff: noqa: UP045
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 on older Raspberry Pi OS
    import tomli as tomllib

from edge.agent.audit_config import AuditConfig, CommandsConfig
from edge.errors import EdgeError
from edge.ota.config import OtaConfig

ENV_PREFIX = "EDGE_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MqttConfig(Section):
    broker: str = Field(
        default="mqtt://localhost:1883",
        title="Broker URL",
        description="mqtt://[user:pass@]host:port (or mqtts:// for TLS)",
    )
    prefix: str = Field(
        default="edge", title="Topic prefix", description="Topics are <prefix>/<device>/...", min_length=1
    )
    device_id: Optional[str] = Field(
        default=None, title="Device id", description="Topic segment naming this device; default the hostname"
    )
    client_id: Optional[str] = Field(
        default=None, title="MQTT client id", description="Default edge-agent-<device id>"
    )
    keepalive_s: int = Field(
        default=30, ge=5, le=3600, title="Keepalive", description="MQTT keepalive in seconds"
    )
    protocol: Literal[5, 311] = Field(
        default=5, title="MQTT protocol", description="5 (MQTT 5) or 311 (MQTT 3.1.1)"
    )
    backoff_min_s: float = Field(
        default=1.0,
        gt=0,
        title="Reconnect backoff minimum",
        description="First wait before reconnecting (doubles, with jitter), seconds",
    )
    backoff_max_s: float = Field(
        default=120.0,
        gt=0,
        title="Reconnect backoff maximum",
        description="Longest wait between reconnect attempts, seconds",
    )
    username: Optional[str] = Field(
        default=None, title="User name", description="Overrides the user in the broker URL"
    )
    password: Optional[SecretStr] = Field(
        default=None,
        title="Password",
        description="Prefer password_file or EDGE_MQTT_PASSWORD; never logged, shown as *** in status and errors",
    )
    password_file: Optional[Path] = Field(
        default=None,
        title="Password file",
        description="First line is the MQTT password (chmod 600); wins over password",
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_from_text(cls, v: Any) -> Any:
        # EDGE_MQTT_PROTOCOL=311 arrives as text; Literal[5, 311] does not coerce it.
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v

    @field_validator("prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        if any(c in v for c in "+#\x00") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must not contain MQTT wildcards (+ #) nor start or end with '/'")
        return v

    @field_validator("device_id")
    @classmethod
    def _device_ok(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in "+#/\x00")):
            raise ValueError("must be non-empty without '/', '+' or '#' (it is one topic level)")
        return v


class TlsConfig(Section):
    ca_file: Optional[Path] = Field(
        default=None, title="CA file", description="CA certificate(s) that signed the broker's"
    )
    cert_file: Optional[Path] = Field(
        default=None, title="Client certificate", description="For brokers with require_certificate true"
    )
    key_file: Optional[Path] = Field(default=None, title="Client key", description="Private key of cert_file")
    insecure: bool = Field(
        default=False,
        title="Skip verification",
        description="Do not verify the broker's certificate (test brokers only)",
    )


class ModelConfig(Section):
    path: Optional[Path] = Field(
        default=None, title="Model", description="The .tflite model to run (required to run)"
    )
    labels: Optional[Path] = Field(
        default=None, title="Labels", description="One label a line, or 'N label' lines"
    )
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"] = Field(
        default="auto",
        title="Runtime",
        description="TFLite runtime; auto = ai_edge_litert, else tflite_runtime, else tensorflow",
    )
    threads: Optional[int] = Field(
        default=None, ge=1, le=64, title="Threads", description="Interpreter threads; default the runtime's"
    )
    delegate: Literal["auto", "cpu", "edgetpu"] = Field(
        default="auto",
        title="Delegate",
        description="auto: Edge TPU models use the Edge TPU, else their CPU twin",
    )
    max_bytes: Optional[int] = Field(
        default=None, ge=1, title="Model size limit", description="Refuse larger model files"
    )
    task: Literal["auto", "classifier", "detector", "pose", "segmentation", "embedding", "generic"] = Field(
        default="auto",
        title="Task",
        description="What the model does; auto reads it from the output signature (status.task says why)",
    )


class SourceConfig(Section):
    spec: Optional[str] = Field(
        default=None,
        title="Source",
        description="A file, a directory, 'mqtt', 'camera[:N]', an rtsp:// or http(s):// stream, a video file, or "
        "'picamera[:N]'",
    )
    poll_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        title="Directory poll interval",
        description="How often a directory is scanned for new files",
    )
    settle_s: float = Field(
        default=0.2,
        ge=0,
        le=60,
        title="Settle time",
        description="A new file is read once unchanged for this long (half-written files)",
    )
    camera_interval_s: float = Field(
        default=1.0, ge=0, le=3600, title="Camera interval", description="Seconds between camera frames"
    )
    fps: Optional[float] = Field(
        default=None,
        gt=0,
        le=1000,
        title="Stream frame rate cap",
        description="Streams: take at most this many frames a second (the newest each time); default as fast "
        "as the model runs",
    )
    motion_threshold: Optional[float] = Field(
        default=None,
        ge=0,
        le=1,
        title="Motion threshold",
        description="Streams: skip frames that differ from the last one inferred by less than this (0-1)",
    )
    queue_size: int = Field(
        default=64,
        ge=1,
        le=100_000,
        title="MQTT request queue",
        description="Pending 'infer' requests; more are refused with an errors message",
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        title="Largest request",
        description="An 'infer' request over this many bytes is refused before decoding",
    )
    max_queue_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1,
        title="Request queue bytes",
        description="Pending 'infer' requests may hold this many bytes; more are refused",
    )


class PreprocessConfig(Section):
    mean: Optional[float] = Field(
        default=None,
        title="Input mean",
        description="float = (pixel - mean) / std; unset = raw pixels (quantized) or [0,1]",
    )
    std: Optional[float] = Field(default=None, title="Input std", description="See mean; must not be 0")
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos", "box"] = Field(
        default="bilinear", title="Resize filter", description="Pillow resampling filter"
    )
    resize: Literal["auto", "stretch", "letterbox"] = Field(
        default="auto",
        title="Resize mode",
        description="stretch to the input, or letterbox (keep the aspect ratio, pad); auto = letterbox for YOLO",
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        ge=1,
        title="Image size limit",
        description="Refuse images with more pixels (decompression bombs)",
    )

    @field_validator("std")
    @classmethod
    def _std_nonzero(cls, v: float | None) -> float | None:
        if v == 0:
            raise ValueError("std must not be 0")
        return v


class PostprocessConfig(Section):
    top_k: int = Field(
        default=5, ge=1, le=1000, title="Top k", description="Classes (or detections) per prediction"
    )
    threshold: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        title="Score threshold",
        description="Drop classes/detections scoring below it",
    )
    max_output_values: int = Field(
        default=1024,
        ge=1,
        title="Generic output cap",
        description="Values per output tensor sent for non-classifier models",
    )
    iou: float = Field(
        default=0.45,
        ge=0.0,
        le=1.0,
        title="NMS IoU",
        description="Detectors: overlap above which NMS drops a box",
    )
    max_detections: int = Field(
        default=100,
        ge=1,
        le=10_000,
        title="Max detections",
        description="Detections (or poses) per prediction",
    )
    publish_mask: bool = Field(
        default=False,
        title="Publish masks",
        description="Segmentation: also publish the class mask as a PNG on <prefix>/<device>/mask",
    )
    full_embedding: bool = Field(
        default=False,
        title="Full embeddings",
        description="Embedding models: publish the whole vector, not its first 8 values",
    )


class SpoolConfig(Section):
    path: Optional[Path] = Field(
        default=None, title="Spool file", description="SQLite spool; default <state_dir>/spool.db"
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=4096,
        title="Spool size limit",
        description="Oldest messages are dropped (and counted) beyond this",
    )
    max_age_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        title="Spool age limit",
        description="Messages older than this are dropped (and counted)",
    )


class MetricsConfig(Section):
    interval_s: float = Field(
        default=10.0,
        ge=0,
        title="Metrics interval",
        description="Seconds between metrics messages; 0 disables them",
    )
    window_s: float = Field(
        default=60.0, gt=0, title="Latency window", description="Percentiles cover this many seconds"
    )


class HomeAssistantConfig(Section):
    enabled: bool = Field(
        default=True,
        title="Home Assistant discovery",
        description="Publish MQTT discovery configs (retained) so Home Assistant creates sensors for this device",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        min_length=1,
        title="Discovery prefix",
        description="Home Assistant's discovery prefix (its MQTT integration setting)",
    )
    objects: list[str] = Field(
        default_factory=list,
        title="Object labels",
        description="Detectors: a count sensor and an occupancy binary_sensor per label (Frigate-style)",
    )

    @field_validator("objects", mode="before")
    @classmethod
    def _objects_from_text(cls, v: Any) -> Any:
        # EDGE_HOMEASSISTANT_OBJECTS="person,car": the environment only holds text
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("objects")
    @classmethod
    def _objects_ok(cls, v: list[str]) -> list[str]:
        from edge.contract.homeassistant import check_objects

        return check_objects(v)

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery_prefix_ok(cls, v: str) -> str:
        if any(c in v for c in "+#\x00") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must not contain MQTT wildcards (+ #) nor start or end with '/'")
        return v


class AgentConfig(Section):
    state_dir: Path = Field(
        default=Path("~/.local/state/edge-agent"),
        title="State directory",
        description="Spool, sequence numbers and the directory source's record live here",
    )
    once: bool = Field(default=False, title="Once", description="Process what the source holds, flush, exit")
    flush_timeout_s: float = Field(
        default=10.0,
        ge=0,
        title="Flush timeout",
        description="At exit, wait this long for broker acks; the rest stays spooled",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", title="Log level", description="stderr log level"
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="MQTT", description="Broker connection")
    model: ModelConfig = Field(default_factory=ModelConfig, title="Model", description="What runs, and where")
    source: SourceConfig = Field(
        default_factory=SourceConfig, title="Source", description="Where inputs come from"
    )
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, title="Preprocessing", description="Image -> input tensor"
    )
    postprocess: PostprocessConfig = Field(
        default_factory=PostprocessConfig, title="Postprocessing", description="Output tensors -> results"
    )
    spool: SpoolConfig = Field(
        default_factory=SpoolConfig, title="Spool", description="On-disk store and forward"
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, title="Metrics", description="Health reports"
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        title="Home Assistant",
        description="MQTT discovery for Home Assistant",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig, title="TLS", description="mqtts:// broker connection (TLS 1.2 or newer)"
    )
    ota: OtaConfig = Field(
        default_factory=OtaConfig,
        title="Model updates",
        description="Signed over-the-air model updates on <prefix>/<device>/model/set",
    )
    audit: AuditConfig = Field(
        default_factory=AuditConfig, title="Audit log", description="Command audit log"
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig,
        title="Commands",
        description="Which command actions this agent executes",
    )

    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser()


class ConfigError(EdgeError):
    """The configuration is invalid; ``problems`` lists (key path, value, message)."""

    exit_code = 2

    def __init__(self, source: str, problems: list[tuple[str, Any, str]]) -> None:
        self.problems = problems
        lines = [f"  {key} = {value!r}: {msg}" for key, value, msg in problems]
        super().__init__(
            f"invalid configuration ({source}):\n" + "\n".join(lines),
            "fix the listed keys (edge-agent check-config FILE checks a file)",
        )


_MISSING = object()


def _value_at(data: Mapping[str, Any], loc: tuple[Any, ...]) -> Any:
    cur: Any = data
    for part in loc:
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def problems_of(exc: ValidationError, data: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        value = _value_at(data, loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see docs/agent.md for the keys)"
        out.append((".".join(str(p) for p in loc), "<missing>" if value is _MISSING else value, msg))
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise EdgeError(f"config file not found: {p}", "check the path given to --config") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("<file>", str(p), f"not valid TOML: {exc}")]) from exc


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``EDGE_<FIELD>`` for top-level keys, ``EDGE_<SECTION>_<FIELD>`` for the rest (e.g. EDGE_MQTT_BROKER)."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, field in AgentConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, Section):
            for child in sub.model_fields:
                key = f"{ENV_PREFIX}{name}_{child}".upper()
                if key in environ:
                    out.setdefault(name, {})[child] = environ[key]
        else:
            key = f"{ENV_PREFIX}{name}".upper()
            if key in environ:
                out[name] = environ[key]
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


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
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path or "flags and environment"), problems_of(exc, data)) from exc


def check_file(path: str | Path) -> list[tuple[str, Any, str]]:
    """Problems of a config file on its own (no env, no flags); empty when valid."""
    try:
        data = read_toml(path)
    except ConfigError as exc:
        return exc.problems
    try:
        AgentConfig.model_validate(data)
    except ValidationError as exc:
        return problems_of(exc, data)
    return []
