"""Home Assistant MQTT discovery for one agent (pure: messages in, nothing sent).

Home Assistant creates entities from retained JSON configs under
``<discovery_prefix>/<component>/<node_id>/<object_id>/config``. The agent
publishes :func:`discovery_messages` retained at start, after every model
change, and again whenever Home Assistant announces ``online`` on
``<discovery_prefix>/status`` (its birth message after a restart).

Every entity reads the agent's own topics (no extra traffic), is tied to the
agent's availability topic (so the Last Will greys them out), carries a
``unique_id`` (so users can rename it in the UI) and belongs to one device
block per agent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge import __version__
from edge.contract import schemas

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
ONLINE, OFFLINE = "online", "offline"


def status_topic(discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """Where Home Assistant announces ``online``/``offline`` (its birth and last will)."""
    return f"{discovery_prefix.rstrip('/')}/status"


@dataclass(frozen=True)
class Sensor:
    """One entity: which topic it reads and which value in the JSON."""

    key: str
    name: str
    topic_kind: str  # a schemas kind: predictions, metrics
    value_template: str
    model_kinds: tuple[str, ...] = ("classifier", "detector", "pose", "segmentation", "embedding", "generic")
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    icon: str | None = None
    precision: int | None = None


# A template rendering "None" leaves the entity "unknown" in Home Assistant
# instead of logging a template error (an empty top_k, a null label, no sensor).
def _best(field_: str, items: str) -> str:
    return f"{{{{ value_json.{items}[0].{field_} if value_json.{items} else None }}}}"


def _best_label(items: str) -> str:
    return (
        f"{{{{ (value_json.{items}[0].label if value_json.{items}[0].label is not none "
        f"else value_json.{items}[0].index) if value_json.{items} else None }}}}"
    )


SENSORS: tuple[Sensor, ...] = (
    Sensor(
        "last_label",
        "Last label",
        "predictions",
        _best_label("top_k"),
        ("classifier",),
        icon="mdi:label-outline",
    ),
    Sensor(
        "last_score",
        "Last score",
        "predictions",
        _best("score", "top_k"),
        ("classifier",),
        state_class="measurement",
        icon="mdi:percent-outline",
        precision=3,
    ),
    Sensor(
        "last_detection",
        "Last detection",
        "predictions",
        _best_label("detections"),
        ("detector",),
        icon="mdi:label-outline",
    ),
    Sensor(
        "last_detection_score",
        "Last detection score",
        "predictions",
        _best("score", "detections"),
        ("detector",),
        state_class="measurement",
        icon="mdi:percent-outline",
        precision=3,
    ),
    Sensor(
        "inference_latency",
        "Inference latency",
        "predictions",
        "{{ value_json.latency_ms.total }}",
        unit="ms",
        device_class="duration",
        state_class="measurement",
        precision=2,
    ),
    Sensor(
        "inferences_per_s",
        "Inferences per second",
        "metrics",
        "{{ value_json.inferences_per_s }}",
        unit="inferences/s",
        state_class="measurement",
        icon="mdi:speedometer",
        precision=2,
    ),
    Sensor(
        "cpu_temperature",
        "CPU temperature",
        "metrics",
        "{{ value_json.cpu_temp_c }}",
        unit="°C",
        device_class="temperature",
        state_class="measurement",
        precision=1,
    ),
)


@dataclass(frozen=True)
class DiscoveryMessage:
    """A retained config; ``payload`` None deletes the entity (an empty retained message)."""

    topic: str
    payload: dict[str, Any] | None
    retain: bool = True
    qos: int = 1

    def payload_bytes(self) -> bytes:
        return b"" if self.payload is None else json.dumps(self.payload, ensure_ascii=False).encode()


def node_id(device: str) -> str:
    """Home Assistant only accepts ``[a-zA-Z0-9_-]`` in the node id of a discovery topic."""
    return "edge_" + re.sub(r"[^a-zA-Z0-9_-]", "_", device)


def config_topic(
    device: str, key: str, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX, component: str = "sensor"
) -> str:
    return f"{discovery_prefix.rstrip('/')}/{component}/{node_id(device)}/{key}/config"


_OBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def check_objects(objects: Sequence[str]) -> list[str]:
    """The ``[homeassistant] objects`` labels, refused when they could not sit in a template or an id."""
    bad = [o for o in objects if not isinstance(o, str) or not _OBJECT.match(o)]
    if bad:
        raise ValueError(
            f"object labels must be 1-64 letters, digits, spaces, '_', '.' or '-' (as in the labels file); "
            f"received {bad!r}"
        )
    return list(objects)


def _object_key(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", label.strip()).strip("_").lower() or "object"


def object_messages(
    status: dict[str, Any],
    objects: Sequence[str],
    *,
    prefix: str = "edge",
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> list[DiscoveryMessage]:
    """Frigate-style entities for a detector, per configured label: a ``<label>_count`` sensor (how
    many in the last prediction) and a ``<label>_occupancy`` binary_sensor (at least one). Deletions
    when the model is not a detector."""
    device = status["device"]
    detector = (status.get("model") or {}).get("kind") == "detector"
    node = node_id(device)
    base = {
        "state_topic": schemas.topic_for("predictions", device, prefix),
        "availability": [
            {
                "topic": schemas.topic_for("availability", device, prefix),
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
            }
        ],
        "availability_mode": "all",
        "device": device_block(status),
        "origin": {"name": "edge-ml-toolkit", "sw_version": __version__},
        "qos": 1,
    }
    out = []
    for label in check_objects(objects):
        key = _object_key(label)
        lit = json.dumps(label)  # a Jinja string literal (labels are checked: no quotes or braces)
        count = f"{{{{ value_json.counts.get({lit}, 0) if value_json.counts is defined else None }}}}"
        count_topic = config_topic(device, f"{key}_count", discovery_prefix)
        occ_topic = config_topic(device, f"{key}_occupancy", discovery_prefix, "binary_sensor")
        if not detector:
            out += [DiscoveryMessage(count_topic, None), DiscoveryMessage(occ_topic, None)]
            continue
        out.append(
            DiscoveryMessage(
                count_topic,
                {
                    **base,
                    "name": f"{label} count",
                    "unique_id": f"{node}_{key}_count",
                    "value_template": count,
                    "state_class": "measurement",
                    "icon": "mdi:counter",
                },
            )
        )
        out.append(
            DiscoveryMessage(
                occ_topic,
                {
                    **base,
                    "name": f"{label} occupancy",
                    "unique_id": f"{node}_{key}_occupancy",
                    "value_template": (
                        f"{{{{ 'ON' if value_json.counts is defined and value_json.counts.get({lit}, 0) > 0 "
                        "else 'OFF' }}"
                    ),
                    "device_class": "occupancy",
                },
            )
        )
    return out


def device_block(status: dict[str, Any]) -> dict[str, Any]:
    node = node_id(status["device"])
    model = status.get("model") or {}
    path = model.get("path") or status.get("model_path") or ""
    block = {
        "identifiers": [node],
        "name": f"edge {status['device']}",
        "manufacturer": "edge-ml-toolkit",
        "model": status.get("board") or status.get("arch") or "edge agent",
        "sw_version": status.get("agent_version") or __version__,
    }
    if path:
        block["hw_version"] = path.replace("\\", "/").rsplit("/", 1)[-1]  # the model file: what it runs
    return block


def discovery_messages(
    status: dict[str, Any],
    *,
    prefix: str = "edge",
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
    objects: Sequence[str] = (),
) -> list[DiscoveryMessage]:
    """The configs for an agent described by its ``status`` payload.

    Sensors that do not fit the model's kind (labels of a generic model, ...)
    come back as deletions, so a model swap also cleans up what no longer applies."""
    device = status["device"]
    kind = (status.get("model") or {}).get("kind", "generic")
    node = node_id(device)
    dev = device_block(status)
    availability = [
        {
            "topic": schemas.topic_for("availability", device, prefix),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
        }
    ]
    out = []
    for s in SENSORS:
        topic = config_topic(device, s.key, discovery_prefix)
        if kind not in s.model_kinds:
            out.append(DiscoveryMessage(topic, None))
            continue
        cfg: dict[str, Any] = {
            "name": s.name,
            "unique_id": f"{node}_{s.key}",
            "state_topic": schemas.topic_for(s.topic_kind, device, prefix),
            "value_template": s.value_template,
            "availability": availability,
            "availability_mode": "all",
            "device": dev,
            "origin": {"name": "edge-ml-toolkit", "sw_version": __version__},
            "qos": 1 if s.topic_kind == "predictions" else 0,
        }
        for key, value in (
            ("unit_of_measurement", s.unit),
            ("device_class", s.device_class),
            ("state_class", s.state_class),
            ("icon", s.icon),
            ("suggested_display_precision", s.precision),
        ):
            if value is not None:
                cfg[key] = value
        out.append(DiscoveryMessage(topic, cfg))
    if objects:
        out += object_messages(status, objects, prefix=prefix, discovery_prefix=discovery_prefix)
    return out


def removal_messages(
    device: str, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX, objects: Sequence[str] = ()
) -> list[DiscoveryMessage]:
    """Empty retained configs: Home Assistant deletes the entities (discovery switched off)."""
    out = [DiscoveryMessage(config_topic(device, s.key, discovery_prefix), None) for s in SENSORS]
    for label in objects:
        key = _object_key(label)
        out.append(DiscoveryMessage(config_topic(device, f"{key}_count", discovery_prefix), None))
        out.append(
            DiscoveryMessage(
                config_topic(device, f"{key}_occupancy", discovery_prefix, "binary_sensor"), None
            )
        )
    return out
