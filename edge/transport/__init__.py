"""MQTT transport of the device agent: broker URLs, a reconnecting client (see ``docs/transport.md``)."""

from __future__ import annotations

from edge.transport.client import Message, MqttClient, TLSOptions, Will
from edge.transport.url import BrokerURL, BrokerURLError, parse_broker_url

__all__ = ["BrokerURL", "BrokerURLError", "Message", "MqttClient", "TLSOptions", "Will", "parse_broker_url"]
