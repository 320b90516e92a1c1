"""edge-agent: run a .tflite model on the device and report over MQTT, losing nothing."""

from __future__ import annotations
