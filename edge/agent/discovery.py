"""Home Assistant MQTT discovery, wired into the agent's life cycle.

The messages come from :mod:`edge.contract.homeassistant` (pure); this module only
decides when to send them: with every status (each connect and each model
change, since a new model kind may add or remove sensors) and whenever Home
Assistant says ``online`` on ``<discovery_prefix>/status`` (it restarted and
forgot non-retained state, or its broker lost the retained configs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.contract import homeassistant

if TYPE_CHECKING:
    from edge.agent.config import HomeAssistantConfig
    from edge.transport.base import Transport

log = logging.getLogger("edge.agent.discovery")


class Discovery:
    """``config``: the ``[homeassistant]`` section; ``status()``: the agent's status message, from
    which the sensors are derived. The app calls :meth:`publish` after every status message."""

    def __init__(
        self,
        config: HomeAssistantConfig,
        *,
        prefix: str,
        device: str,
        client: Transport,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.prefix = prefix
        self.client = client
        self.status = status
        self.guard = _RefusalGuard(config, device)
        client.on_refused(self.guard.on_refused)
        client.on_puback(self.guard.on_puback)
        client.on_disconnect(self.guard.on_disconnect)
        # The client subscribes again after every reconnect by itself.
        client.subscribe(homeassistant.status_topic(config.discovery_prefix), self._on_ha_status, 1)

    def publish(self) -> int:
        """Send the discovery configs (retained); returns how many went out."""
        if self.guard.off:
            return 0
        sent = 0
        for msg in homeassistant.discovery_messages(
            self.status(),
            prefix=self.prefix,
            discovery_prefix=self.config.discovery_prefix,
            objects=list(self.config.objects),
        ):
            token = self.client.publish(msg.topic, msg.payload_bytes(), msg.qos, msg.retain, None)
            if token is not None:
                sent += 1
                self.guard.tokens.add(token)
        log.debug("Home Assistant discovery: %d configs under %s/", sent, self.config.discovery_prefix)
        return sent

    def _on_ha_status(self, message: Any) -> None:
        if message.payload.strip() == homeassistant.ONLINE.encode():
            log.info("Home Assistant is online: sending discovery again")
            self.publish()


class _RefusalGuard:
    """Turns discovery off when the broker refuses it (an ACL without the homeassistant/ topics).

    mosquitto drops a client after a denied publish, often before its refusing PUBACK reaches us,
    so retrying would cost the agent its connection, and its predictions, at every reconnect. Two
    connections in a row lost with discovery still in flight count as a refusal too.
    """

    STRIKES = 2

    def __init__(self, config: HomeAssistantConfig, device: str) -> None:
        self.config = config
        self.device = device
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
        cfg = self.config
        log.warning(
            "the broker refused Home Assistant discovery (%s): discovery is off until the agent "
            "restarts. fix: let this client write %s/sensor/%s/# (and read %s) in the broker's ACL, "
            "or set [homeassistant] enabled = false",
            why,
            cfg.discovery_prefix.rstrip("/"),
            homeassistant.node_id(self.device),
            homeassistant.status_topic(cfg.discovery_prefix),
        )
