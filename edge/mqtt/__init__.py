"""MQTT transport of the device agent: broker URLs, a reconnecting client (see ``docs/transport.md``)."""

from __future__ import annotations

from edge.mqtt.client import Message, MqttClient, TLSOptions, Will
from edge.mqtt.url import BrokerURL, BrokerURLError, parse_broker_url

__all__ = ["BrokerURL", "BrokerURLError", "Message", "MqttClient", "TLSOptions", "Will", "parse_broker_url"]
