"""Frigate-style Home Assistant entities for detectors: per-label count sensors and occupancy
binary_sensors, their templates rendered with Jinja2 (Home Assistant's engine) on real payloads."""

from __future__ import annotations

import pytest

from edge.contract import homeassistant as ha
from edge.contract import messages
from tests.contract.test_homeassistant import render
from tests.support import samples


def detector_status() -> dict:
    st = samples.status("cam-1")
    st["model"] = {**st["model"], "kind": "detector"}
    return st


def prediction(**fields: object) -> dict:
    return messages.prediction(
        "cam-1",
        seq=1,
        source="f",
        model_sha256="0" * 64,
        latency_ms={"preprocess": 1, "inference": 1, "postprocess": 1, "total": 3},
        kind="detector",
        result_key="",
        result=None,
        fields=fields,
    )


def test_count_and_occupancy_per_configured_label() -> None:
    msgs = ha.discovery_messages(detector_status(), objects=["person", "traffic light"])
    cfgs = {m.topic: m.payload for m in msgs if m.payload is not None}
    count = cfgs["homeassistant/sensor/edge_cam-1/person_count/config"]
    occ = cfgs["homeassistant/binary_sensor/edge_cam-1/traffic_light_occupancy/config"]
    assert occ["device_class"] == "occupancy" and count["state_class"] == "measurement"
    assert (
        count["state_topic"] == "edge/cam-1/predictions" and count["unique_id"] == "edge_cam-1_person_count"
    )
    two = prediction(detections=[], counts={"person": 2, "traffic light": 1})
    none = prediction(detections=[], counts={})
    assert render(count["value_template"], two) == "2" and render(count["value_template"], none) == "0"
    assert render(occ["value_template"], two) == "ON" and render(occ["value_template"], none) == "OFF"


def test_objects_removed_when_the_model_is_not_a_detector() -> None:
    msgs = ha.discovery_messages(samples.status("cam-1"), objects=["person"])  # a classifier
    gone = {m.topic for m in msgs if m.payload is None}
    assert "homeassistant/binary_sensor/edge_cam-1/person_occupancy/config" in gone
    assert "homeassistant/sensor/edge_cam-1/person_count/config" in gone
    removal = {m.topic for m in ha.removal_messages("cam-1", objects=["person"])}
    assert "homeassistant/binary_sensor/edge_cam-1/person_occupancy/config" in removal


@pytest.mark.parametrize("bad", ['per"son', "a}}b", "", "x" * 65])
def test_labels_that_cannot_sit_in_a_template_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="object labels"):
        ha.check_objects([bad])
