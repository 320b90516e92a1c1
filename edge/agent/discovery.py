"""Home Assistant MQTT discovery, wired into the agent's life cycle.

The messages come from :mod:`edge.homeassistant` (pure); this module only
decides when to send them: with every status (each connect and each model
change, since a new model kind may add or remove sensors) and whenever Home
Assistant says ``online`` on ``<discovery_prefix>/status`` (it restarted and
forgot non-retained state, or its broker lost the retained configs).
"""

from __future__ import annotations

import logging
from typing import Any

from edge import homeassistant

log = logging.getLogger("edge.agent.discovery")


def publish(agent: Any) -> int:
    """Send the discovery configs (retained); returns how many went out."""
    cfg = agent.cfg.homeassistant
    if agent.client is None:
        return 0
    sent = 0
    for msg in homeassistant.discovery_messages(agent.status_payload(), prefix=agent.cfg.mqtt.prefix,
                                                discovery_prefix=cfg.discovery_prefix):
        if agent.client.publish(msg.topic, msg.payload_bytes(), msg.qos, msg.retain, None) is not None:
            sent += 1
    log.debug("Home Assistant discovery: %d configs under %s/", sent, cfg.discovery_prefix)
    return sent


def install(agent: Any) -> None:
    """Hook discovery into ``agent`` when ``[homeassistant] enabled`` (the default)."""
    cfg = agent.cfg.homeassistant
    if not cfg.enabled:
        return
    subscribed = False

    def on_ha_status(message: Any) -> None:
        if message.payload.strip() == homeassistant.ONLINE.encode():
            log.info("Home Assistant is online: sending discovery again")
            publish(agent)

    def on_connect(agent_: Any) -> None:
        nonlocal subscribed
        if not subscribed:  # the client re-subscribes by itself after a reconnect
            subscribed = True
            agent_.client.subscribe(homeassistant.status_topic(cfg.discovery_prefix), on_ha_status, 1)

    agent.on_status_hooks.append(publish)
    agent.on_connect_hooks.append(on_connect)
