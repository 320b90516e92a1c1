"""Home Assistant discovery configs, checked the way Home Assistant reads them: value templates are
rendered with Jinja2 (Home Assistant's template engine) against payloads that follow the contract."""

from __future__ import annotations

import json
import re

import jinja2
import jinja2.sandbox
import pytest

from edge.contract import homeassistant as ha
from edge.contract import schemas
from tests.support import samples

REQUIRED = ("name", "unique_id", "state_topic", "value_template", "availability", "device")


def render(template: str, payload: dict) -> str:
    # HA renders with value_json bound to the parsed payload, in a sandbox
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value_json=payload, value=json.dumps(payload))


def configs(status: dict, **kw: str) -> dict[str, dict]:
    return {m.topic: m.payload for m in ha.discovery_messages(status, **kw) if m.payload is not None}


def test_classifier_gets_the_five_sensors_with_required_keys() -> None:
    status = samples.status("pi-1")
    msgs = ha.discovery_messages(status)
    assert all(m.retain and m.qos == 1 for m in msgs)
    cfgs = configs(status)
    keys = sorted(t.split("/")[3] for t in cfgs)
    assert keys == ["cpu_temperature", "inference_latency", "inferences_per_s", "last_label", "last_score"]
    for topic, cfg in cfgs.items():
        assert re.fullmatch(r"homeassistant/sensor/edge_pi-1/[a-z_]+/config", topic)
        for key in REQUIRED:
            assert cfg.get(key), (topic, key)
        assert cfg["availability"] == [
            {
                "topic": "edge/pi-1/availability",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        assert cfg["device"]["identifiers"] == ["edge_pi-1"]
        assert cfg["device"]["model"] == "Raspberry Pi 4 Model B Rev 1.4"
        assert schemas.split_topic(cfg["state_topic"])[0] == "pi-1"
    assert len({c["unique_id"] for c in cfgs.values()}) == len(cfgs)
    lat = cfgs["homeassistant/sensor/edge_pi-1/inference_latency/config"]
    assert (lat["unit_of_measurement"], lat["device_class"], lat["state_class"]) == (
        "ms",
        "duration",
        "measurement",
    )
    temp = cfgs["homeassistant/sensor/edge_pi-1/cpu_temperature/config"]
    assert (temp["unit_of_measurement"], temp["device_class"]) == ("°C", "temperature")


@pytest.mark.parametrize(
    "kind,payload,expected",
    [
        (
            "classifier",
            samples.prediction(total=4.5, label="seven", score=0.91),
            {"last_label": "seven", "last_score": "0.91", "inference_latency": "4.5"},
        ),
        (
            "detector",
            samples.detection(),
            {"last_detection": "person", "last_detection_score": "0.8", "inference_latency": "12"},
        ),
        ("generic", samples.generic(), {"inference_latency": "1"}),
    ],
)
def test_value_templates_render_real_values(kind: str, payload: dict, expected: dict) -> None:
    cfgs = configs(samples.status(kind=kind))
    metrics = samples.metrics(rate=2.5)
    got = {}
    for topic, cfg in cfgs.items():
        kind_of_topic = schemas.split_topic(cfg["state_topic"])[1]
        source = {"predictions": payload, "metrics": metrics}[kind_of_topic]
        got[topic.split("/")[3]] = render(cfg["value_template"], source)
    assert got == {**expected, "inferences_per_s": "2.5", "cpu_temperature": "51.2"}


def test_templates_say_none_instead_of_failing_on_empty_or_unlabelled_results() -> None:
    cfgs = configs(samples.status())
    label_t = cfgs["homeassistant/sensor/edge_pi-1/last_label/config"]["value_template"]
    score_t = cfgs["homeassistant/sensor/edge_pi-1/last_score/config"]["value_template"]
    empty = samples.prediction()
    empty["top_k"] = []
    assert render(label_t, empty) == "None" and render(score_t, empty) == "None"  # HA: "unknown"
    unlabelled = samples.prediction()
    unlabelled["top_k"][0]["label"] = None
    assert render(label_t, unlabelled) == "7"
    temp_t = cfgs["homeassistant/sensor/edge_pi-1/cpu_temperature/config"]["value_template"]
    m = samples.metrics()
    m["cpu_temp_c"] = None
    assert render(temp_t, m) == "None"


def test_a_model_swap_deletes_sensors_that_no_longer_apply() -> None:
    msgs = {m.topic.split("/")[3]: m for m in ha.discovery_messages(samples.status(kind="generic"))}
    assert msgs["last_label"].payload is None and msgs["last_label"].payload_bytes() == b""
    assert msgs["inference_latency"].payload is not None
    assert all(m.payload is None and m.retain for m in ha.removal_messages("pi-1"))


def test_odd_device_ids_and_custom_prefixes() -> None:
    status = samples.status("kitchen cam.1")
    cfgs = configs(status, prefix="site/a", discovery_prefix="ha")
    topic, cfg = next(iter(cfgs.items()))
    assert topic.startswith("ha/sensor/edge_kitchen_cam_1/")
    assert cfg["state_topic"].startswith("site/a/kitchen cam.1/")
    assert cfg["availability"][0]["topic"] == "site/a/kitchen cam.1/availability"
    assert ha.status_topic("ha") == "ha/status"
