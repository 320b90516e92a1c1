"""Every MQTT topic of the contract, named once: ``<prefix>/<device>/<leaf>``.

``OUTPUTS`` are what the agent publishes (kind -> leaf); ``INPUTS`` are what it
subscribes to. Everything else (agent, subscribers, OTA push, Home Assistant
discovery) derives its topic names from here.
"""

from __future__ import annotations

# kind -> leaf, for the messages the agent publishes (each has a JSON Schema in edge.contract.schemas)
OUTPUTS: dict[str, str] = {
    "availability": "availability",
    "status": "status",
    "predictions": "predictions",
    "errors": "errors",
    "metrics": "metrics",
    "cmd_result": "cmd/result",
    "bench": "bench",
    "audit": "audit",
    "shadow": "shadow",
}
# kind -> leaf, binary payloads the agent publishes (no JSON Schema): the segmentation mask as a PNG,
# the input as a small JPEG tagged with its prediction's seq (edge.contract.thumbnail)
BINARY_OUTPUTS: dict[str, str] = {"mask": "mask", "thumbnail": "thumbnail"}
# kind -> leaf, for what the agent listens to
INPUTS: dict[str, str] = {"cmd": "cmd", "infer": "infer", "model_set": "model/set"}
_OUTPUT_KIND = {v: k for k, v in OUTPUTS.items()}
_BINARY_KIND = {v: k for k, v in BINARY_OUTPUTS.items()}


def topic_for(kind: str, device: str, prefix: str = "edge") -> str:
    leaf = OUTPUTS.get(kind) or BINARY_OUTPUTS.get(kind) or INPUTS[kind]
    return f"{prefix.rstrip('/')}/{device}/{leaf}"


def split_topic(topic: str, prefix: str = "edge") -> tuple[str, str] | None:
    """``edge/<device>/cmd/result`` -> ``("<device>", "cmd_result")``; None for topics the agent
    does not publish (inputs such as ``infer`` and ``cmd``, or other prefixes)."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    device, _, leaf = topic[len(head) :].partition("/")
    kind = _OUTPUT_KIND.get(leaf)
    if not device or kind is None:
        return None
    return device, kind


def split_binary_topic(topic: str, prefix: str = "edge") -> tuple[str, str] | None:
    """``edge/<device>/thumbnail`` -> ``("<device>", "thumbnail")``; None for any other topic."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    device, _, leaf = topic[len(head) :].partition("/")
    kind = _BINARY_KIND.get(leaf)
    return (device, kind) if device and kind is not None else None


class Topics:
    """The topics of one device, computed once (they are read on every publish)."""

    def __init__(self, prefix: str, device: str) -> None:
        self.prefix, self.device = prefix, device

        def t(kind: str) -> str:
            return topic_for(kind, device, prefix)

        self.availability, self.status, self.predictions = t("availability"), t("status"), t("predictions")
        self.errors, self.metrics, self.bench, self.audit = t("errors"), t("metrics"), t("bench"), t("audit")
        self.mask, self.thumbnail, self.shadow = t("mask"), t("thumbnail"), t("shadow")
        self.cmd, self.cmd_result, self.infer, self.model_set = (
            t("cmd"),
            t("cmd_result"),
            t("infer"),
            t("model_set"),
        )
