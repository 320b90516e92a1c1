"""Home Assistant MQTT discovery, wired into the agent's life cycle.

The messages come from :mod:`edge.contract.homeassistant` (pure); this module only
decides when to send them: with every status (each connect and each model
change, since a new model kind may add or remove sensors) and whenever Home
Assistant says ``online`` on ``<discovery_prefix>/status`` (it restarted and
forgot non-retained state, or its broker lost the retained configs).
"""

from __future__ import annotations

import logging
from typing import Any

from edge.contract import homeassistant

log = logging.getLogger("edge.agent.discovery")


def publish(agent: Any) -> int:
    """Send the discovery configs (retained); returns how many went out."""
    cfg = agent.cfg.homeassistant
    guard: _RefusalGuard | None = getattr(agent, "_discovery_guard", None)
    if agent.client is None or (guard is not None and guard.off):
        return 0
    sent = 0
    for msg in homeassistant.discovery_messages(
        agent.status_payload(),
        prefix=agent.cfg.mqtt.prefix,
        discovery_prefix=cfg.discovery_prefix,
        objects=list(cfg.objects),
    ):
        token = agent.client.publish(msg.topic, msg.payload_bytes(), msg.qos, msg.retain, None)
        if token is not None:
            sent += 1
            if guard is not None:
                guard.tokens.add(token)
    log.debug("Home Assistant discovery: %d configs under %s/", sent, cfg.discovery_prefix)
    return sent


class _RefusalGuard:
    """Turns discovery off when the broker refuses it (an ACL without the homeassistant/ topics).

    mosquitto drops a client after a denied publish, often before its refusing PUBACK reaches us,
    so retrying would cost the agent its connection, and its predictions, at every reconnect. Two
    connections in a row lost with discovery still in flight count as a refusal too.
    """

    STRIKES = 2

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.tokens: set[int] = set()  # discovery messages not acknowledged yet
        self.strikes = 0
        self.off = False

    def on_puback(self, token: int) -> None:
        if token in self.tokens:
            self.tokens.discard(token)
            if not self.tokens:
                self.strikes = 0

    def on_refused(self, token: int, reason: str) -> None:
        if token in self.tokens:
            self._turn_off(f"it answered {reason}")

    def on_disconnect(self) -> None:
        if self.tokens and not self.off:
            self.tokens.clear()
            self.strikes += 1
            if self.strikes >= self.STRIKES:
                self._turn_off(
                    f"it closed the connection {self.strikes} times in a row while discovery was in flight"
                )

    def _turn_off(self, why: str) -> None:
        if self.off:
            return
        self.off = True
        self.tokens.clear()
        cfg = self.agent.cfg.homeassistant
        log.warning(
            "the broker refused Home Assistant discovery (%s): discovery is off until the agent "
            "restarts. fix: let this client write %s/sensor/%s/# (and read %s) in the broker's ACL, "
            "or set [homeassistant] enabled = false",
            why,
            cfg.discovery_prefix.rstrip("/"),
            homeassistant.node_id(self.agent.device),
            homeassistant.status_topic(cfg.discovery_prefix),
        )


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

    guard = agent._discovery_guard = _RefusalGuard(agent)

    def on_connect(agent_: Any) -> None:
        nonlocal subscribed
        if not subscribed:  # the client re-subscribes by itself after a reconnect
            subscribed = True
            agent_.client.on_refused(guard.on_refused)
            agent_.client.on_puback(guard.on_puback)
            agent_.client.on_disconnect(guard.on_disconnect)
            agent_.client.subscribe(homeassistant.status_topic(cfg.discovery_prefix), on_ha_status, 1)

    agent.on_status_hooks.append(publish)
    agent.on_connect_hooks.append(on_connect)
