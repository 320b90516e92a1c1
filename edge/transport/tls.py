"""What the broker connection needs from the agent config: TLS options and MQTT credentials.

Kept beside the client (not in the agent) so that everything about reaching the broker is
decided in one place: the app hands this module its ``[mqtt]`` and ``[tls]`` sections and gets
back the URL with credentials and the :class:`~edge.transport.client.TLSOptions`.
"""

from __future__ import annotations

import dataclasses
import logging
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.agent.config import MqttConfig, TlsConfig
    from edge.transport.client import TLSOptions
    from edge.transport.url import BrokerURL

log = logging.getLogger("edge.transport.tls")


def read_password_file(path: str | Path) -> str:
    """The first line of ``path``; warns when other users can read the file."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgeError(
            f"cannot read the MQTT password file {p}: {exc.strerror}",
            "check mqtt.password_file in the agent config",
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "MQTT password file %s is readable by other users (mode %o): chmod 600 it", p, mode & 0o777
        )
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise EdgeError(f"MQTT password file {p} is empty", "put the password on its first line")
    return lines[0]


def _secret(value: Any) -> str | None:
    # A plain string, or a wrapper that keeps it out of reprs (get_secret_value()).
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter()) if callable(getter) else str(value)


def credentials(mqtt: MqttConfig, url: BrokerURL) -> BrokerURL:
    """``url`` with the user name and password of the ``[mqtt]`` section.

    Order: the URL's own, then ``mqtt.username`` / ``mqtt.password`` (also ``EDGE_MQTT_PASSWORD``
    through the config), then ``mqtt.password_file``, which wins.
    """
    username = mqtt.username or url.username
    password = url.password
    if mqtt.password is not None:
        password = _secret(mqtt.password)
    if mqtt.password_file is not None:
        password = read_password_file(mqtt.password_file)
    return dataclasses.replace(url, username=username, password=password)


def tls_options(tls: TlsConfig, url: BrokerURL) -> TLSOptions | None:
    """TLS settings from the ``[tls]`` section (None: plain, or whatever the URL scheme implies)."""
    if not (url.tls or tls.ca_file or tls.cert_file):
        return None
    from edge.transport.client import TLSOptions

    return TLSOptions(
        ca_file=str(tls.ca_file) if tls.ca_file else None,
        cert_file=str(tls.cert_file) if tls.cert_file else None,
        key_file=str(tls.key_file) if tls.key_file else None,
        insecure=bool(tls.insecure),
    )
