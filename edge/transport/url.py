"""Broker URLs: ``mqtt://[user:pass@]host[:port]`` and ``mqtts://...`` (TLS).

The password is kept out of every string this module produces, so a URL can be
logged, shown in ``status`` or put in an error message safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from edge.errors import EdgeError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
EXPECTED_FORM = "mqtt://[user:pass@]host[:port] (or mqtts:// for TLS)"


class BrokerURLError(EdgeError):
    """A broker URL that cannot be used (a configuration error)."""


@dataclass(frozen=True)
class BrokerURL:
    """A parsed broker URL; ``str()``/``repr()`` show ``***`` instead of the password."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def redacted(self) -> str:
        """``mqtt://user:***@host:port``: safe for logs and status messages."""
        auth = ""
        if self.username is not None:
            auth = self.username + (":***" if self.password is not None else "") + "@"
        elif self.password is not None:
            auth = ":***@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        pw = None if self.password is None else "***"
        return (
            f"BrokerURL(scheme={self.scheme!r}, host={self.host!r}, port={self.port!r}, "
            f"username={self.username!r}, password={pw!r})"
        )


def _fail(url: str, why: str) -> BrokerURLError:
    # Never echo a password back: show the URL with its credentials masked.
    return BrokerURLError(
        f"invalid broker URL {_mask(url)!r}: {why}; expected {EXPECTED_FORM}",
        "pass e.g. --broker mqtt://user:secret@192.168.1.10:1883 "
        "(percent-encode special characters in user and password)",
    )


def _mask(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        creds, _, hostport = netloc.rpartition("@")
        user = creds.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in creds else f"{user}@{hostport}"
    return f"{scheme}://{netloc}{slash}{tail}"


def parse_broker_url(url: str) -> BrokerURL:
    """Parse and validate a broker URL; raise :class:`BrokerURLError` naming the expected form."""
    if not isinstance(url, str) or not url.strip():
        raise _fail(str(url), "it is empty")
    url = url.strip()
    if "://" not in url:
        raise _fail(url, "the scheme is missing")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise _fail(url, f"the port is not a number between 0 and 65535 ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _fail(
            url, f"unsupported scheme {parts.scheme!r} (use mqtt or mqtts; websockets are not supported)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(
            url, "it has a path, query or fragment; a broker URL is only scheme, credentials, host and port"
        )
    host = parts.hostname
    if not host:
        raise _fail(url, "the host is missing")
    if port == 0:
        raise _fail(url, "port 0 is not a valid broker port")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username == "" and password is None:
        username = None
    return BrokerURL(
        scheme=scheme, host=host, port=port or DEFAULT_PORTS[scheme], username=username, password=password
    )
