from __future__ import annotations

import pytest

from edge.errors import EdgeError
from edge.transport.url import BrokerURL, BrokerURLError, parse_broker_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://localhost", BrokerURL("mqtt", "localhost", 1883)),
        ("mqtts://broker.lan", BrokerURL("mqtts", "broker.lan", 8883)),
        ("mqtt://10.0.0.5:1884", BrokerURL("mqtt", "10.0.0.5", 1884)),
        ("MQTT://Host:1/", BrokerURL("mqtt", "host", 1)),
        ("mqtt://[::1]:1999", BrokerURL("mqtt", "::1", 1999)),
        ("mqtt://alice@h", BrokerURL("mqtt", "h", 1883, "alice", None)),
        ("mqtt://alice:s3cr%40t%3A@h:2000", BrokerURL("mqtt", "h", 2000, "alice", "s3cr@t:")),
        ("  mqtt://h:1883  ", BrokerURL("mqtt", "h", 1883)),
    ],
)
def test_parse_valid(url: str, expected: BrokerURL) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "empty"),
        ("localhost:1883", "scheme is missing"),
        ("http://h:80", "unsupported scheme 'http'"),
        ("ws://h", "unsupported scheme"),
        ("mqtt://h:notaport", "port"),
        ("mqtt://h:70000", "port"),
        ("mqtt://h:0", "port 0"),
        ("mqtt://:1883", "host is missing"),
        ("mqtt://h/topic", "path"),
        ("mqtt://h?x=1", "query"),
    ],
)
def test_parse_invalid_names_expected_form(url: str, why: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url(url)
    err = info.value
    assert isinstance(err, EdgeError)
    assert why in err.what
    assert "mqtt://[user:pass@]host[:port]" in err.what
    assert err.fix


def test_password_never_shown() -> None:
    url = parse_broker_url("mqtts://bob:hunter2@broker:8884")
    assert url.password == "hunter2"
    assert url.redacted() == "mqtts://bob:***@broker:8884"
    for text in (str(url), repr(url), f"{url}", url.redacted()):
        assert "hunter2" not in text
        assert "***" in text
    assert parse_broker_url("mqtt://bob@h").redacted() == "mqtt://bob@h:1883"
    assert parse_broker_url("mqtt://[::1]").redacted() == "mqtt://[::1]:1883"


def test_invalid_url_error_masks_password() -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url("mqtt://bob:hunter2@h:99999")
    assert "hunter2" not in str(info.value)
    assert "bob:***@h" in str(info.value)
