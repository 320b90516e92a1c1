"""edge.deferred: stand-ins that import a module on first use (what keeps paho's ssl out of the agent)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.deferred import DeferredModule, defer, is_loaded
from tests.support.process import run_python, subprocess_env

_MOD = """
LOADS.append(__name__)
class WouldBlock(Exception):
    pass
class Other(Exception):
    pass
def hello():
    return "real " + __name__
"""


@pytest.fixture
def fake_modules(tmp_path: Path) -> Iterator[list[str]]:
    """Importable modules ``dfr_plain`` and ``dfr_pkg.sub`` that record, in ``LOADS``, each time they run."""
    loads: list[str] = []
    (tmp_path / "dfr_plain.py").write_text(_MOD)
    (tmp_path / "dfr_pkg").mkdir()
    (tmp_path / "dfr_pkg" / "__init__.py").write_text("")
    (tmp_path / "dfr_pkg" / "sub.py").write_text(_MOD)
    import builtins

    builtins.LOADS = loads  # type: ignore[attr-defined]
    sys.path.insert(0, str(tmp_path))
    try:
        yield loads
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("dfr_plain", "dfr_pkg", "dfr_pkg.sub"):
            sys.modules.pop(name, None)
        del builtins.LOADS  # type: ignore[attr-defined]


def test_import_statements_do_not_load_an_attribute_does_once(fake_modules: list[str]) -> None:
    assert defer("dfr_plain") is True
    import dfr_plain  # type: ignore[import-not-found]
    import dfr_plain as again  # type: ignore[import-not-found]  # the import system reads __spec__

    assert fake_modules == [] and not is_loaded("dfr_plain") and isinstance(dfr_plain, DeferredModule)
    assert dfr_plain.hello() == "real dfr_plain"
    assert again.hello() == "real dfr_plain" and fake_modules == ["dfr_plain"]  # executed once
    assert is_loaded("dfr_plain") and not isinstance(sys.modules["dfr_plain"], DeferredModule)


def test_from_import_loads(fake_modules: list[str]) -> None:
    defer("dfr_plain")
    from dfr_plain import hello  # type: ignore[import-not-found]

    assert hello() == "real dfr_plain" and fake_modules == ["dfr_plain"]


def test_placeholder_exceptions_catch_nothing_until_the_real_module_loads(fake_modules: list[str]) -> None:
    defer("dfr_plain", placeholders=("WouldBlock",))
    import dfr_plain  # type: ignore[import-not-found]

    def read(exc: BaseException) -> str:
        try:
            raise exc
        except dfr_plain.WouldBlock:  # what paho does around every plain socket read
            return "would block"
        except BlockingIOError:
            return "plain"

    assert read(BlockingIOError()) == "plain"
    assert fake_modules == [], "reading a placeholder loaded the module"
    real_error = dfr_plain.Other  # any other attribute loads it ...
    assert fake_modules == ["dfr_plain"] and real_error.__module__ == "dfr_plain"
    # ... and the stand-in (which importers still hold) now hands out the real classes
    real_would_block = sys.modules["dfr_plain"].WouldBlock
    assert dfr_plain.WouldBlock is real_would_block
    assert read(real_would_block()) == "would block"


def test_submodule_stand_in_is_the_parents_attribute_until_loaded(fake_modules: list[str]) -> None:
    defer("dfr_pkg.sub")
    import dfr_pkg  # type: ignore[import-not-found]
    import dfr_pkg.sub  # type: ignore[import-not-found]

    assert isinstance(dfr_pkg.sub, DeferredModule) and fake_modules == []
    assert dfr_pkg.sub.hello() == "real dfr_pkg.sub"
    assert not isinstance(sys.modules["dfr_pkg"].sub, DeferredModule), "the parent kept the stand-in"


def test_nothing_to_defer(fake_modules: list[str]) -> None:
    import dfr_plain  # type: ignore[import-not-found]  # really imported first

    assert defer("dfr_plain") is False and sys.modules["dfr_plain"] is dfr_plain and is_loaded("dfr_plain")
    assert defer("dfr_no_such_module") is False and "dfr_no_such_module" not in sys.modules
    assert not is_loaded("dfr_no_such_module")


def test_agent_footprint_settings_in_a_fresh_process() -> None:
    """The agent's entry point defers paho's ssl/urllib.request; TLS set-up still gets the real ssl."""
    code = textwrap.dedent("""
        import json, os, sys
        from edge.agent import footprint
        arenas = footprint.limit_malloc_arenas()
        deferred = footprint.defer_unused_imports()
        import paho.mqtt.client as paho
        from edge.deferred import is_loaded
        before = {m: is_loaded(m) for m in ("ssl", "urllib.request")} | {m: m in sys.modules for m in ("_ssl", "http.client", "email.message")}
        from edge.transport.client import MqttClient, TLSOptions
        from edge.transport.url import parse_broker_url
        c = MqttClient(parse_broker_url("mqtts://localhost:8883"), "x", tls=TLSOptions())
        import ssl
        print(json.dumps({"arenas": arenas, "deferred": deferred, "before": before, "after": is_loaded("ssl"),
                          "ctx": type(c._tls_context()).__name__, "paho_ssl": paho.ssl.SSLWantReadError is ssl.SSLWantReadError}))
    """)
    r = run_python("-c", code, timeout=60)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["arenas"] is True  # glibc (Debian, Raspberry Pi OS): mallopt accepted
    assert out["deferred"] == ["ssl", "urllib.request"]
    assert not any(out["before"].values()), out["before"]
    assert out["after"] is True and out["ctx"] == "SSLContext" and out["paho_ssl"] is True
    env = subprocess_env() | {"MALLOC_ARENA_MAX": "4"}
    r = run_python("-c", "from edge.agent import footprint; print(footprint.limit_malloc_arenas())", env=env)
    assert r.stdout.strip() == "False", "an operator's MALLOC_ARENA_MAX must win"
